"""``python -m curate.llm.proof``: one real chat completion with the bundled model.

Run in a child process by setup (``curate.llm.llama_build``) before it calls
an environment ready: a llama.cpp build that compiles on a machine may still
crash there on its first completion (an instruction set the CPU or its
hypervisor does not really offer), and a child that dies with SIGSEGV or
SIGILL only says so by its exit status. On success it prints one JSON line:
the seconds taken, llama.cpp's system line (the instruction sets in use) and
the reply's length.
"""

from __future__ import annotations

import json
import sys
import time

# Long enough that the prompt is processed in a batch (matrix-matrix kernels), then a
# few generated tokens (matrix-vector kernels): both paths the servers use.
PROMPT = ("You label short videos. The speaker cuts an onion, heats a pan, adds oil and slides the slices in. "
          "In five words, what is this video about?")


def main() -> int:
    t0 = time.perf_counter()
    import llama_cpp

    from .server import smollm2_gguf_path

    llm = llama_cpp.Llama(model_path=str(smollm2_gguf_path()), n_ctx=512, n_threads=1, n_threads_batch=1,
                          verbose=False)
    reply = llm.create_chat_completion(messages=[{"role": "user", "content": PROMPT}], max_tokens=12,
                                       temperature=0.0)
    text = reply["choices"][0]["message"]["content"] or ""
    system = llama_cpp.llama_print_system_info()
    print(json.dumps({"seconds": round(time.perf_counter() - t0, 2), "reply_chars": len(text),
                      "completion_tokens": reply["usage"]["completion_tokens"],
                      "system_info": system.decode() if isinstance(system, bytes) else str(system)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
