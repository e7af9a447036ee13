"""Training and evaluating the reply generator on a tiny model and a small CSV."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from bot.errors import SupportbotError
from bot.generation import ReplyGenerator, ServingOptions
from bot.placeholders import slot_names
from bot.prompting import build_messages
from bot.settings import CPU_REPLY_MINUTES_WITH_REFERENCES, load_settings
from training.data import Example
from training.reply_data import IGNORE_INDEX, clean_reply, encode, with_replies
from training.reply_eval import EvalOptions, evaluate_replies, invented_slots, retrieve, score

EXAMPLE = Example("where is my parcel", "track_order", "Track it at {{Tracking Page}}.\r\nThanks!")


def test_encode_masks_the_prompt_and_ends_with_eos(tiny_lm_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    row = encode(tokenizer, EXAMPLE, max_length=512)
    prompt_len = row["labels"].count(IGNORE_INDEX)
    assert len(row["input_ids"]) == len(row["labels"]) == len(row["attention_mask"])
    assert row["labels"][:prompt_len] == [IGNORE_INDEX] * prompt_len
    assert row["labels"][prompt_len:] == row["input_ids"][prompt_len:]
    assert tokenizer.decode(row["labels"][prompt_len:]) == "Track it at {{Tracking Page}}.\nThanks!<|im_end|>"
    assert len(encode(tokenizer, EXAMPLE, max_length=prompt_len + 3)["input_ids"]) == prompt_len + 3


def test_training_prompt_is_the_serving_prompt(tiny_lm_dir):
    from transformers import AutoTokenizer

    row = encode(AutoTokenizer.from_pretrained(tiny_lm_dir), EXAMPLE, max_length=512)
    generator = ReplyGenerator.from_pretrained(tiny_lm_dir, options=ServingOptions(int8=False))
    served = generator.prompt_ids(build_messages([], EXAMPLE.text, EXAMPLE.intent))
    assert row["input_ids"][: row["labels"].count(IGNORE_INDEX)] == served


def test_slots_and_invented_slots():
    assert clean_reply(" a\r\nb ") == "a\nb"
    assert slot_names(["see {{Order Number}} and {{ Website Name }}", "none"]) == {"Order Number", "Website Name"}
    assert invented_slots("{{Order Number}} {{Secret Code}}", {"Order Number"}) == ["Secret Code"]


def test_data_without_replies_is_refused(tmp_path):
    with pytest.raises(SupportbotError, match="no example with a reply"):
        with_replies([Example("hi", "greet")], "mine.csv")
    path = tmp_path / "no_replies.csv"
    path.write_text("text,intent\n" + "".join(f"hi {i},greet\n" for i in range(5)))
    result = subprocess.run([shutil.which("supportbot"), "train", "replies", "--data", str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error: ") and "has no example with a reply" in result.stderr


def test_eval_of_folder_without_manifest_is_one_error_line(tmp_path):
    result = subprocess.run([shutil.which("supportbot"), "eval", "replies", str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {tmp_path}: not a supportbot model folder (no manifest.json)"


def test_trained_version_holds_adapter_manifest_and_merged_model(tiny_replies_version, tiny_lm_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    manifest = json.loads((tiny_replies_version / "manifest.json").read_text())
    assert manifest["kind"] == "replies" and manifest["base_model"] == str(tiny_lm_dir)
    assert manifest["hyperparameters"]["lora_r"] == 4 and manifest["metrics"]["steps"] == 2
    assert manifest["train_examples"] == 4 and len(manifest["data"]["sha256"]) == 64  # CPU: steps x batch
    assert manifest["metrics"]["train_loss"] > 0 and "validation_loss" in manifest["metrics"]
    assert manifest["train_wall_seconds"] > 0
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_lm_dir), tiny_replies_version)
    assert any("lora_A" in name for name, _ in model.named_parameters())
    assert (tiny_replies_version / "merged" / "model.safetensors").is_file()


def test_a_version_copied_to_another_home_loads_there(tiny_lm_dir, reply_csv, tmp_path):
    """adapter_config.json names the hub id, not this machine's folder; at load time the id
    resolves to the other home's converted packaged copy (here the tiny stand-in), offline."""
    from training.replies import ReplyTrainConfig, train_replies

    hub_id = "HuggingFaceTB/SmolLM2-135M-Instruct"
    here, there = (load_settings(home=tmp_path / name, cache_dir=tmp_path / name / "cache") for name in ("here", "there"))
    for settings in (here, there):
        shutil.copytree(tiny_lm_dir, settings.cache / "base-models" / hub_id.split("/")[-1])
    config = ReplyTrainConfig(max_steps=1, batch_size=2, max_length=64, validation_examples=2, merge=False,
                              lora_r=4, lora_alpha=8, draft_replies=0)
    version = train_replies(reply_csv, here.model_copy(update={"reply_base": hub_id}), config,
                            output=here.home / "models" / "replies" / "v1")
    assert json.loads((version / "adapter_config.json").read_text())["base_model_name_or_path"] == hub_id
    copied = shutil.copytree(version, there.home / "models" / "replies" / "v1")
    shutil.rmtree(here.home)
    generator = ReplyGenerator.load(copied, cache_dir=there.cache, options=ServingOptions(dtype_name="float32"))
    assert generator.version == "v1" and isinstance(generator.generate(user_text="hi", max_new_tokens=3), str)


def test_training_refuses_existing_output_and_bad_options(tiny_replies_version, reply_csv, tiny_lm_dir):
    from training.replies import ReplyTrainConfig, train_replies

    settings = load_settings(reply_base=str(tiny_lm_dir))
    with pytest.raises(SupportbotError, match="already exists"):
        train_replies(reply_csv, settings, ReplyTrainConfig(max_steps=1), output=tiny_replies_version)
    with pytest.raises(SupportbotError, match="lora_r"):
        train_replies(reply_csv, settings, ReplyTrainConfig(lora_r=0))
    with pytest.raises(SupportbotError, match="draft_replies"):
        train_replies(reply_csv, settings, ReplyTrainConfig(draft_replies=-1))
    with pytest.raises(SupportbotError, match="target modules"):
        train_replies(reply_csv, settings, ReplyTrainConfig(max_steps=1, target_modules=("nope",)))


def test_retrieval_returns_the_reply_of_the_nearest_request(tiny_encoder_dir):
    from sentence_transformers import SentenceTransformer

    encoder = SentenceTransformer(str(tiny_encoder_dir), device="cpu")
    train = [Example("cancel my order", "a", "reply A"), Example("where is my refund", "b", "reply B")]
    assert retrieve(encoder, train, ["where is my refund", "cancel my order"]) == ["reply B", "reply A"]
    perfect = score(["same words here"], ["same words here"], encoder, set())
    assert perfect["rouge_l"] == 100 and perfect["chrf"] == 100 and perfect["cosine"] == pytest.approx(1, abs=1e-4)


def test_evaluate_replies_writes_the_three_system_table(tiny_replies_version, tiny_encoder_dir, reply_csv):
    settings = load_settings(cache_dir=tiny_replies_version.parent / "cache")
    options = EvalOptions(limit=3, max_new_tokens=4, embedder=str(tiny_encoder_dir), progress=False, samples=2)
    result = evaluate_replies(tiny_replies_version, settings, str(reply_csv), options)
    assert result["examples"] == 3 and set(result["systems"]) == {"base", "retrieval", "adapter", "reference"}
    for name in ("base", "retrieval", "adapter"):
        metrics = result["systems"][name]
        assert 0 <= metrics["rouge_l"] <= 100 and 0 <= metrics["invented_slot_rate"] <= 1
    assert result["systems"]["retrieval"]["invented_slot_rate"] == 0
    assert result["systems"]["retrieval"]["rouge_l"] > result["systems"]["base"]["rouge_l"]
    written = json.loads((tiny_replies_version / "eval" / "replies.json").read_text())
    assert written["systems"] == result["systems"] and len(written["samples"]) == 2
    assert "| adapter |" in (tiny_replies_version / "eval" / "replies.md").read_text()


def test_cpu_defaults_bound_the_demo_and_gpu_defaults_do_not():
    from bot.device import Device
    from training.replies import ReplyTrainConfig

    cpu = ReplyTrainConfig().for_device(Device("cpu", "float32"))
    gpu = ReplyTrainConfig().for_device(Device("cuda", "bfloat16"))
    plain = ReplyTrainConfig(references=0).for_device(Device("cpu", "float32"))
    assert (cpu.max_steps, cpu.batch_size, cpu.max_minutes, cpu.draft_replies, cpu.max_train_examples) == (40, 4, CPU_REPLY_MINUTES_WITH_REFERENCES, 0, 160)
    assert (plain.max_steps, plain.batch_size, plain.max_minutes, plain.draft_replies) == (40, 8, 10.0, 2)
    assert (gpu.max_steps, gpu.batch_size, gpu.max_minutes, gpu.draft_replies, gpu.max_train_examples) == (-1, 16, None, 0, None)
    assert ReplyTrainConfig(max_steps=0, max_minutes=0).for_device(Device("cpu", "float32")).max_minutes is None


def test_time_budget_stops_training_after_the_step_that_crosses_it(reply_csv, tiny_lm_dir, tmp_path):
    from training.replies import ReplyTrainConfig, train_replies

    settings = load_settings(reply_base=str(tiny_lm_dir))
    config = ReplyTrainConfig(max_steps=20, batch_size=2, max_length=48, max_minutes=1e-6, validation_examples=0)
    folder = train_replies(reply_csv, settings, config, output=tmp_path / "budget")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["metrics"]["steps"] == 1 and "validation_loss" not in manifest["metrics"]


def test_base_replies_are_cached_per_serving_path(tiny_lm_dir, tmp_path):
    from bot.generation import ServingOptions
    from training.reply_eval import base_replies

    settings = load_settings(cache_dir=tmp_path)
    rows = [EXAMPLE]
    fp32 = EvalOptions(max_new_tokens=3, serving=ServingOptions(int8=False), progress=False)
    first = base_replies(tiny_lm_dir, rows, fp32, settings)
    assert base_replies(tiny_lm_dir, rows, fp32, settings) == first
    base_replies(tiny_lm_dir, rows, EvalOptions(max_new_tokens=3, serving=ServingOptions(int8=True)), settings)
    assert len(list((tmp_path / "reply-eval").glob("*.json"))) == 2
