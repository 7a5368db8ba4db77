"""The reference model behind `curate validate`: a small streaming video-LLM
trained on a release to measure whether its frames help predict its words.

``data`` turns the release's clips into LiveCC-style per-second streams
(visual tokens, then that second's words); ``model`` is the projector and a
causal LM (``tiny`` from scratch, or a Hugging Face model); ``train`` runs
each (seed, condition) through Ray Train with resumable checkpoints;
``protocol`` runs the three conditions with every seed and computes the gains
with intervals over held-out videos and seeds, and the evidence behind them;
``controls`` makes the negative controls of ``--controls``; ``progress``
shows the training; ``report`` writes
``validation/<run>/`` beside the release (its card and manifest), never into it.
"""
