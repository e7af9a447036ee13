"""Send messages through the real router (production models of SUPPORTBOT_HOME) and print route,
intent, confidence, OOS score, context, latency and the reply.

    python scripts/try_bot.py "I want to cancel my order" "tell me a joke" ...   # each in a new conversation
    python scripts/try_bot.py --dialog "hi" "I want to cancel my order" "it's order 4471" "thanks!"
"""

from __future__ import annotations

import argparse

from bot.runtime import load_router
from bot.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("messages", nargs="+")
    parser.add_argument("--dialog", action="store_true", help="all messages in one conversation, in order")
    args = parser.parse_args()
    router = load_router(load_settings())
    conversation = router.new_conversation()
    for text in args.messages:
        if not args.dialog:
            conversation = router.new_conversation()
        turn = list(router.respond(conversation, text))[-1].turn
        p, d = turn.prediction, turn.decision
        print(f"### customer: {text}\nroute={d.route} ({d.reason}); intent={p.intent if p else None} "
              f"confidence={p.confidence if p else 0:.3f} oos={p.oos_score if p else 0:.3f} "
              f"threshold={d.threshold if d.threshold is not None else float('nan'):.3f} "
              f"context={d.context} latency={turn.latency_ms / 1000:.1f}s missing={turn.missing_slots}\n"
              f"bot: {turn.reply}\n", flush=True)


if __name__ == "__main__":
    main()
