"""``supportbot data validate``: real files in a temporary folder, the installed script run as a
user (or CI) runs it; the exit status gates (0 clean or warnings only, 1 errors, 2 unreadable)."""

from __future__ import annotations

from pathlib import Path

from helpers import run_cli

from training.data import load
from training.validate import check, normalise, normalise_loosely

CLEAN = {
    "track_order": ["where is my parcel", "track my order", "has my package shipped",
                    "when will my order arrive", "status of my delivery"],
    "cancel_order": ["cancel my order", "i want to cancel", "stop my purchase please",
                     "please call off the order", "undo what i bought"],
    "get_refund": ["i want my money back", "refund please", "how do i get a refund",
                   "return the money to my card", "can i be reimbursed"],
}


def write_csv(path: Path, rows: list[tuple[str, str]], header: str = "sentence,label") -> Path:
    path.write_text(header + "\n" + "".join(f'"{text}",{label}\n' for text, label in rows))
    return path


def clean_rows() -> list[tuple[str, str]]:
    return [(text, intent) for intent, texts in CLEAN.items() for text in texts]


def validate(*args: str):
    result = run_cli("data", "validate", *args)
    assert "Traceback" not in result.stderr
    return result


def lines(result, severity: str) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith(severity + ":")]


def test_a_clean_file_passes_and_reports_the_columns_it_read(tmp_path):
    train = write_csv(tmp_path / "train.csv", clean_rows())
    result = validate(str(train))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{train}: 15 rows, 3 intents, 0 out-of-scope; columns: text='sentence', intent='label'" in result.stdout
    assert result.stdout.rstrip().endswith("0 error(s), 0 warning(s)")


def test_the_same_utterance_under_two_intents_is_an_error(tmp_path):
    rows = clean_rows() + [("Track my order!", "cancel_order"), ("refund  please", "get_refund")]
    train = write_csv(tmp_path / "train.csv", rows)
    result = validate(str(train))
    assert result.returncode == 1
    assert lines(result, "error") == [
        f"error: {train}, rows 2, 16, field 'sentence': the same utterance 'track my order' is labelled with "
        "2 intents: track_order (row 2), cancel_order (row 16); keep one"]
    assert lines(result, "warning") == [
        f"warning: {train}, rows 12, 17, field 'sentence': utterance 'refund please' appears 2 times under "
        "get_refund; duplicates weigh it more in training"]


def test_intents_with_too_few_examples(tmp_path):
    rows = clean_rows() + [("talk to a person", "human"), ("hello", "greet"), ("hi there", "greet")]
    train = write_csv(tmp_path / "train.csv", rows)
    result = validate(str(train))
    assert result.returncode == 1
    assert lines(result, "error") == [
        f"error: {train}, row 16, field 'label': intent 'human' has a single example: it cannot be split "
        "or cross-validated; add at least 5"]
    assert lines(result, "warning") == [
        f"warning: {train}, rows 17, 18, field 'label': intent 'greet' has 2 examples (fewer than 5); add more"]
    assert validate(str(train), "--min-examples", "2").stdout.count("warning:") == 0


def test_train_test_leakage_and_near_duplicates(tmp_path):
    train = write_csv(tmp_path / "train.csv", clean_rows() + [("refund order 4471", "get_refund")])
    test = write_csv(tmp_path / "test.csv", [
        ("is my parcel on its way", "track_order"),
        ("Cancel my order.", "cancel_order"),     # in train but for case and punctuation
        ("refund order 19", "get_refund"),        # in train but for the number
        ("set an alarm", "out_of_scope"),
        ("change my address", "change_address"),  # an intent train does not have
    ], header="text,intent")
    result = validate(str(train), "--test", str(test))
    assert result.returncode == 1
    assert f"{test}: 5 rows, 4 intents, 1 out-of-scope; columns: text='text', intent='intent'" in result.stdout
    assert lines(result, "error") == [
        f"error: {test}, row 2, field 'text': 1 test utterance(s) are also in {train}, e.g. 'Cancel my order.' "
        "(train row 6); the test score would be too high: remove them from one file"]
    assert lines(result, "warning") == [
        f"warning: {test}, row 3, field 'text': 1 test utterance(s) differ from a training utterance only in "
        "digits, e.g. 'refund order 19' ~ 'refund order 4471' (train row 16)",
        f"warning: {test}, row 5, field 'intent': intent 'change_address' has no training rows; the "
        "classifier cannot predict it"]


def test_unmapped_out_of_scope_labels_are_flagged_until_mapped(tmp_path):
    oos = [("play some jazz", "None"), ("what's the weather", "None"), ("set an alarm", "None"),
           ("tell me a joke about cats", "None"), ("book a flight", "None")]
    train = write_csv(tmp_path / "train.csv", clean_rows() + oos)
    result = validate(str(train))
    assert result.returncode == 0
    assert lines(result, "warning") == [
        f"warning: {train}, rows 16, 17, 18, 19, 20, field 'label': 5 row(s) labelled 'None' look out of scope "
        "but are trained as an intent; pass --oos-label None if they are"]
    result = validate(str(train), "--oos-label", "none")
    assert result.returncode == 0 and "warning:" not in result.stdout
    assert "20 rows, 3 intents, 5 out-of-scope" in result.stdout


def test_a_file_whose_only_label_is_out_of_scope_fails_in_one_line(tmp_path):
    train = write_csv(tmp_path / "oos.csv", [("play jazz", "oos"), ("set an alarm", "oos")])
    result = validate(str(train))
    assert result.returncode == 1
    assert lines(result, "error") == [
        f"error: {train}, field 'label': the only label is the out-of-scope label: every row is out of scope; "
        "add rows of the intents to answer"]


def test_given_columns_and_unreadable_files(tmp_path):
    mine = tmp_path / "mine.jsonl"
    mine.write_text("".join(f'{{"msg": "{t}", "topic": "{i}", "sentence": "x"}}\n' for t, i in clean_rows()))
    result = validate(str(mine), "--text-column", "msg", "--intent-column", "topic")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "columns: text='msg', intent='topic'" in result.stdout
    odd = write_csv(tmp_path / "odd.csv", clean_rows(), header="words,tag")
    result = validate(str(odd))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (f"error: {odd}: no text column found; the columns are: words, tag; name one "
                             "text/utterance/sentence/query/question or give --text-column\n")


def test_normalisation():
    assert normalise("  Where's my ORDER?! ") == "wheres my order"
    assert normalise("ｆｕｌｌ－width  ＴＥＸＴ") == "fullwidth text"
    assert normalise_loosely("order #4471, please") == "order please"


def test_check_on_loaded_rows_names_rasa_examples(tmp_path):
    nlu = tmp_path / "nlu.yml"
    nlu.write_text("nlu:\n- intent: greet\n  examples: |\n    - hi\n    - Hi!\n"
                   "- intent: bye\n  examples: |\n    - hi\n    - bye\n")
    report = check(load(str(nlu)), min_examples=2)
    assert [str(f) for f in report.errors] == [
        f"error: {nlu}, rows 1, 2, field 'examples': the same utterance 'hi' is labelled with 2 intents: "
        "greet (row 1), bye (row 2); keep one"]
    assert str(report.files[0]).endswith("columns: Rasa nlu.yml")
