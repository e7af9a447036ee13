"""What customers get from a retrieval-augmented replies version: its evaluated replies with the
router's safety net applied (``bot/router.py`` ``Router._strayed``: the top approved answer wherever
a reply holds a number, URL or e-mail address in neither the request nor the retrieved answers, or
has a cosine similarity below ``[answers] min_source_similarity`` to every retrieved answer).

Run on the ``replies.json`` that ``supportbot eval replies`` wrote (it keeps every row)::

    python bench/served_replies.py <version>/eval/replies.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.answers import embed, load_encoder, new_facts  # noqa: E402
from bot.placeholders import slot_names  # noqa: E402
from bot.settings import AnswersConfig, load_settings  # noqa: E402
from training.reply_eval import score  # noqa: E402


def main() -> None:
    result = json.loads(Path(sys.argv[1]).read_text())
    rows, settings = result["rows"], load_settings()
    encoder = load_encoder(result["embedder"], settings.cache)
    floor = AnswersConfig().min_source_similarity
    served, replaced = [], 0
    for row in rows:
        reply, found = row["adapter"], row["retrieved"]
        far = not found or float((embed(encoder, found) @ embed(encoder, [reply])[0]).max()) < floor
        if found and (new_facts(reply, [row["request"], *found]) or far):
            served.append(found[0])
            replaced += 1
        else:
            served.append(reply)
    references = [row["reference"] for row in rows]
    known = slot_names(references + served + [a for row in rows for a in row["retrieved"]])
    metrics = score(served, references, encoder, known, [[row["request"], *row["retrieved"]] for row in rows])
    print(json.dumps({"served": metrics, "replaced": replaced, "rows": len(rows)}))


if __name__ == "__main__":
    main()
