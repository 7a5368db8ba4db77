"""``python -m curate.llm.llama_serve ARGS``: llama-cpp-python's server (same ARGS),
with the JSON grammar checked the way llama.cpp's own server does it.

llama-cpp-python applies a grammar to every token of the vocabulary (49k for
SmolLM2) before picking one: up to half the CPU of a string-heavy JSON reply
(a demo caption: 4.2-5.8 CPU seconds, 2.7 with this change). For
greedy decoding (temperature 0, as the demo asks) the token picked is the
highest-scoring one the grammar allows, so it is enough to check the best
token first and filter the whole vocabulary only when the grammar refuses it
(4-13 % of tokens on the demo's prompts). The replies are the same token for
token (checked on the demo's prompts); other temperatures keep
llama-cpp-python's sampler.

Written against llama-cpp-python 0.3.36 (constraints.txt); if its internals
differ, the patch steps aside and the server runs as shipped.
"""

from __future__ import annotations

import ctypes
import logging
import math

log = logging.getLogger("curate.llm")


class _GreedyGrammar:
    """A llama.cpp sampler: the grammar applied to the best token alone, or to all when it refuses it."""

    def __init__(self, model, grammar):
        import llama_cpp
        import numpy as np

        self._llama_cpp = llama_cpp
        self.grammar = llama_cpp.llama_sampler_init_grammar(
            model.vocab, grammar._grammar.encode("utf-8"), grammar._root.encode("utf-8"))
        one = (llama_cpp.llama_token_data * 1)()
        best = llama_cpp.llama_token_data_array(data=one, size=1, selected=-1, sorted=False)

        def apply(_sampler, cur_p) -> None:
            data = cur_p.contents
            candidates = np.ctypeslib.as_array(data.data, shape=(data.size,))
            i = int(np.argmax(candidates["logit"]))
            one[0].id, one[0].logit, one[0].p = int(candidates["id"][i]), float(candidates["logit"][i]), 0.0
            best.size, best.selected = 1, -1
            llama_cpp.llama_sampler_apply(self.grammar, ctypes.byref(best))
            if not math.isfinite(one[0].logit):  # refused: filter every token, the greedy sampler picks among the rest
                llama_cpp.llama_sampler_apply(self.grammar, cur_p)

        def accept(_sampler, token: int) -> None:
            llama_cpp.llama_sampler_accept(self.grammar, token)

        # ctypes callbacks must outlive the sampler: keep them on self.
        self._callbacks = (llama_cpp.llama_sampler_i_apply(apply), llama_cpp.llama_sampler_i_accept(accept))
        iface = self._iface = llama_cpp.llama_sampler_i()
        iface.apply, iface.accept = self._callbacks
        iface.name = llama_cpp.llama_sampler_i_name(0)
        iface.reset = llama_cpp.llama_sampler_i_reset(0)
        iface.clone = llama_cpp.llama_sampler_i_clone(0)
        iface.free = llama_cpp.llama_sampler_i_free(0)
        self.sampler = llama_cpp.llama_sampler()
        self.sampler.iface = ctypes.pointer(iface)
        self.sampler.ctx = None

    def __del__(self) -> None:
        self._llama_cpp.llama_sampler_free(self.grammar)


def install() -> bool:
    """Patch ``Llama._init_sampler`` for greedy decoding with a grammar; False if it cannot be."""
    try:
        import llama_cpp
        import llama_cpp._internals as internals
        from llama_cpp.llama import Llama

        original = Llama._init_sampler
        needed = (llama_cpp.llama_sampler_i, llama_cpp.llama_sampler_chain_add, llama_cpp.llama_sampler_chain_n,
                  internals.LlamaSampler.add_penalties, internals.LlamaSampler.add_greedy)
    except (ImportError, AttributeError) as exc:
        log.warning("llama-cpp-python's sampler is not the one expected (%s): grammar left as shipped", exc)
        return False
    del needed

    def _init_sampler(self, *args, **kw):
        if args or kw.get("grammar") is None or kw.get("temp", 0.8) != 0.0 or kw.get("logits_processor"):
            return original(self, *args, **kw)
        # llama-cpp-python's greedy chain, penalties -> grammar -> greedy, with the grammar checked lazily.
        sampler = internals.LlamaSampler()
        sampler.add_penalties(n_vocab=self._n_vocab, penalty_last_n=self.last_n_tokens_size,
                              penalty_repeat=kw.get("repeat_penalty", 1.0),
                              penalty_freq=kw.get("frequency_penalty", 0.0),
                              penalty_present=kw.get("presence_penalty", 0.0))
        grammar = _GreedyGrammar(self._model, kw["grammar"])
        llama_cpp.llama_sampler_chain_add(sampler.sampler, ctypes.pointer(grammar.sampler))
        # As with llama-cpp-python's own custom samplers: taken out of the chain before it is freed.
        sampler.custom_samplers.append((llama_cpp.llama_sampler_chain_n(sampler.sampler) - 1, grammar))
        sampler.add_greedy()
        return sampler

    Llama._init_sampler = _init_sampler
    return True


def main() -> None:
    install()
    from llama_cpp.server.__main__ import main as serve

    serve()


if __name__ == "__main__":
    main()
