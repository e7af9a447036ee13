"""Send messages through the real router (production models of SUPPORTBOT_HOME), each in a new
conversation, and print route, intent, confidence, OOS score, latency and the reply.

    python scripts/try_bot.py "I want to cancel my order" "tell me a joke" ...
"""

from __future__ import annotations

import sys

from bot.runtime import load_router
from bot.settings import load_settings


def main() -> None:
    router = load_router(load_settings())
    for text in sys.argv[1:]:
        conversation = router.store.new_conversation()
        turn = list(router.respond(conversation, text))[-1].turn
        p = turn.prediction
        print(f"### {text}\nroute={turn.decision.route} ({turn.decision.reason}); intent={p.intent if p else None} "
              f"confidence={p.confidence if p else 0:.3f} oos={p.oos_score if p else 0:.3f} "
              f"threshold={turn.decision.threshold:.3f} latency={turn.latency_ms / 1000:.1f}s "
              f"missing={turn.missing_slots}\n{turn.reply}\n", flush=True)


if __name__ == "__main__":
    main()
