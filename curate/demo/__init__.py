"""Demo corpus (generated talking videos with known truth) and a loopback video site."""

from .corpus import (
    DEMO_DATA,
    build_video,
    generate_corpus,
    load_truth,
    make_corrupt_video,
    make_long_video,
    make_silent_video,
    make_video_without_audio,
)
from .site import DemoSite, serve_forever

__all__ = [
    "DEMO_DATA",
    "DemoSite",
    "build_video",
    "generate_corpus",
    "load_truth",
    "make_corrupt_video",
    "make_long_video",
    "make_silent_video",
    "make_video_without_audio",
    "serve_forever",
]
