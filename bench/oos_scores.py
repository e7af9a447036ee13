"""Out-of-scope scores on whole unseen intents: the product's against nearest-neighbour ones.

    python bench/oos_scores.py MODEL [--data banking77] [--json out.json]

MODEL is a version trained with ``--holdout K`` (``supportbot eval oos`` trains one). On its
test rows (held-out intents = out of scope, the rest in scope) it prints AUROC and the
out-of-scope recall at the threshold that answers 95 % of in-scope rows, for:

* the product's scores: ``msp`` and ``energy`` (:func:`bot.classifier.oos_scores`), and the
  model's own ``msp+knn`` when it has one (:meth:`bot.classifier.IntentClassifier.oos_score`:
  the two views calibrated on the model's calibration rows, not on these);
* k-nearest-neighbour distance (Sun et al. 2022, "Out-of-Distribution Detection with Deep
  Nearest Neighbors"): minus the k-th largest cosine similarity between a message's features
  and the in-scope training rows' (the split the model was trained with), k = 1, 5, 10, on the
  mean-pooled last hidden state and on the [CLS] pooler output where the model has one;
* Mahalanobis distance to the nearest class mean, shared covariance (Podolskiy et al. 2021);
* ``msp`` combined with each kNN score by averaging their ranks over these rows (an ensemble of
  the two views: confidence of the head, distance in the encoder's space; the product's
  ``msp+knn`` takes the larger of the two, k = 1 on the mean-pooled view, each ranked against
  its calibration rows).

An evaluation tool, not a product path: it chooses no threshold and nothing is tuned here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.classifier import MAX_CHARS, IntentClassifier, Outputs, oos_scores  # noqa: E402
from bot.settings import load_settings  # noqa: E402
from training.data import load, split  # noqa: E402
from training.intent_eval import held_out, test_rows  # noqa: E402


def features(classifier: IntentClassifier, texts: list[str], batch_size: int = 64):
    """``{"mean": [n, d], "cls": [n, d] or absent, "logits": [n, labels]}`` numpy arrays."""
    import numpy as np
    import torch

    model, tokenizer = classifier.model, classifier.tokenizer
    model.eval()
    parts: dict[str, list] = {"mean": [], "cls": [], "logits": []}
    pooler = getattr(getattr(model, "bert", None), "pooler", None)
    for start in range(0, len(texts), batch_size):
        encoded = tokenizer([t[:MAX_CHARS] for t in texts[start:start + batch_size]], padding=True,
                            truncation=True, max_length=classifier.max_length, return_tensors="pt")
        with torch.inference_mode():
            out = model(**encoded, output_hidden_states=True)
            hidden, mask = out.hidden_states[-1], encoded["attention_mask"].unsqueeze(-1).float()
            parts["mean"].append(((hidden * mask).sum(1) / mask.sum(1)).numpy())
            if pooler is not None:
                parts["cls"].append(pooler(hidden).numpy())
            parts["logits"].append(out.logits.float().numpy())
    return {name: np.concatenate(chunks) for name, chunks in parts.items() if chunks}


def main() -> None:
    import numpy as np
    import torch
    from scipy.stats import rankdata
    from sklearn.metrics import roc_auc_score

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", default="banking77")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    settings = load_settings()
    classifier = IntentClassifier.load(args.model)
    unseen = set(held_out(classifier))
    rows = test_rows(classifier, args.data, settings)
    seed = classifier.manifest.data.split_seed
    data = load(args.data, data_dir=settings.data_dir, home=settings.home)
    train = [e for e in split(data, seed=settings.seed if seed is None else seed).train if e.intent not in unseen]
    is_oos = np.array([e.intent in unseen for e in rows])
    test, reference = features(classifier, [e.text for e in rows]), features(classifier, [e.text for e in train])
    scores = {m: oos_scores(torch.tensor(test["logits"]), m, classifier.labels).numpy() for m in ("msp", "energy")}
    if classifier.neighbours is not None:  # the product's msp+knn, as the router computes it
        scores[f"{classifier.oos_method} (the product's)"] = classifier.oos_score(
            Outputs(torch.tensor(test["logits"]), torch.nn.functional.normalize(torch.tensor(test["mean"]), dim=-1)))
    labels = np.array([e.intent for e in train])
    for view in [v for v in ("mean", "cls") if v in test]:
        unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
        nearest = -np.sort(-(unit(test[view]) @ unit(reference[view]).T), axis=1)
        for k in (1, 5, 10):
            scores[f"knn{k}_{view}"] = -nearest[:, k - 1]
        classes = sorted(set(labels))
        means = np.stack([reference[view][labels == c].mean(0) for c in classes])
        centred = reference[view] - means[[classes.index(c) for c in labels]]
        precision = np.linalg.pinv(np.cov(centred.T))
        scores[f"mahalanobis_{view}"] = np.min([np.einsum("ij,jk,ik->i", test[view] - m, precision, test[view] - m)
                                                for m in means], axis=0)
    for name in [n for n in scores if n.startswith("knn")]:
        scores[f"msp+{name}"] = rankdata(scores["msp"]) + rankdata(scores[name])
    table = {}
    for name, score in scores.items():
        at_95 = score > np.quantile(score[~is_oos], 0.95)
        table[name] = {"auroc": float(roc_auc_score(is_oos, score)), "oos_recall_at_95_in_scope": float(at_95[is_oos].mean())}
    print(f"{args.model}: {int(is_oos.sum())} unseen-intent vs {int((~is_oos).sum())} in-scope test rows, "
          f"{len(train)} in-scope training rows as neighbours")
    print("| score | AUROC | OOS recall at 95 % in-scope answered |\n|---|---|---|")
    for name, row in table.items():
        print(f"| {name} | {row['auroc']:.4f} | {row['oos_recall_at_95_in_scope']:.3f} |")
    if args.json:
        args.json.write_text(json.dumps({"model": str(args.model), "held_out_intents": sorted(unseen), "scores": table},
                                        indent=2) + "\n")


if __name__ == "__main__":
    main()
