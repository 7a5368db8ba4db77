"""Continuous read English speech for the ASR bench, synthesised by espeak-ng.

The demo corpus speaks one word at a time at 1 to 4 words per second with
pauses, which suits timing tests; a bench of "read speech" wants sentences
read straight through (~2.7 words per second), as a narrator reads them.
The text is this file's own. Returns 16 kHz mono float32 and the text.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np

PASSAGE = """\
The river starts high in the hills, where snow melts slowly in the spring sun.
Small streams run down through the rocks and join together in the valley.
By the time the water reaches the first town, it is wide enough for boats.
People have lived along its banks for thousands of years.
They built mills to grind their grain and bridges to cross to the markets.
In the summer, children swim in the shallow parts near the sandy shore.
In the winter, the edges freeze and the birds gather in the open water.
Farmers use the river to water their fields during the dry months.
The soil near the banks is dark and rich, and almost anything will grow there.
Further down, the river passes a large city with tall buildings and busy roads.
Ships carry wood, coal and grain from the port to towns along the coast.
At night, the lights of the city shine on the surface of the water.
Fishermen leave before sunrise and return in the afternoon with their catch.
The market opens early, and the smell of fresh bread fills the narrow streets.
Near the sea, the river slows down and spreads into a wide green delta.
Thousands of birds stop there each year on their long journey to the south.
Scientists come to count them and to measure the health of the water.
They have found that the river is cleaner now than it was fifty years ago.
New rules stopped the factories from pouring waste into the stream.
Today, visitors walk along the old towpath and watch the boats go by.
Some of them rent bicycles and ride all the way from the hills to the sea.
The journey takes three days, with good places to rest in every village.
Most travellers say that the last evening, watching the sun set over the delta, is the best part.
"""


def read_speech(seconds: float) -> tuple[np.ndarray, str]:
    """The passage read sentence by sentence until at least ``seconds`` of audio (0.3 s between sentences)."""
    from curate.media.audio import decode_audio
    from curate.demo.corpus import VOICE, WORDS_PER_MINUTE, _require_tool

    espeak = _require_tool("espeak-ng")
    parts, said = [], []
    pause = np.zeros(int(0.3 * 16000), dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        for i, sentence in enumerate(s for s in PASSAGE.splitlines() if s.strip()):
            wav = Path(tmp) / f"{i}.wav"
            subprocess.run([espeak, "-v", VOICE, "-s", str(WORDS_PER_MINUTE), "-w", str(wav), "--", sentence],
                           check=True, capture_output=True)
            parts += [decode_audio(wav), pause]
            said.append(sentence)
            if sum(len(p) for p in parts) >= seconds * 16000:
                break
    return np.concatenate(parts), " ".join(said)
