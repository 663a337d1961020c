"""data.column_map: a dataset's own field names read as the fields a format knows."""

from __future__ import annotations

import json

import pytest

from senior_intern.config import DataConfig, TrainingJob
from senior_intern.data import DatasetError, load_dataset


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_mapped_fields_read_as_prompt_and_completion(tmp_path, tiny_tokenizer):
    qa = _write(tmp_path / "qa.jsonl", [{"question": "def add ->", "answer": " add def", "id": i} for i in range(4)])
    with pytest.raises(DatasetError) as caught:
        load_dataset(qa, tiny_tokenizer, DataConfig(), 64)
    assert caught.value.problems[0].fields == ("question", "answer", "id")  # data, for the doctor
    assert "qa.jsonl:1" in str(caught.value) and "it has: question, answer, id" in str(caught.value)
    mapped = load_dataset(qa, tiny_tokenizer, DataConfig(column_map=["question=prompt", "answer=completion"]), 64)
    direct = load_dataset(_write(tmp_path / "pc.jsonl", [{"prompt": "def add ->", "completion": " add def"}] * 4),
                          tiny_tokenizer, DataConfig(), 64)
    assert mapped.format.value == "prompt_completion" and len(mapped.samples) == 4
    assert [s.input_ids for s in mapped.samples] == [s.input_ids for s in direct.samples]
    assert [s.labels for s in mapped.samples] == [s.labels for s in direct.samples]


def test_a_rename_onto_an_existing_field_is_a_problem_on_that_line(tmp_path, tiny_tokenizer):
    data = _write(tmp_path / "d.jsonl", [{"question": "a ->", "answer": " b"}, {"question": "c ->", "prompt": "x", "answer": " d"}])
    cfg = DataConfig(column_map=["question=prompt", "answer=completion"])
    with pytest.raises(DatasetError, match=r"d\.jsonl:2: record has both 'question' and 'prompt'"):
        load_dataset(data, tiny_tokenizer, cfg, 64)
    cfg.skip_malformed = True
    assert len(load_dataset(data, tiny_tokenizer, cfg, 64).samples) == 1


@pytest.mark.parametrize("pairs, words", [
    (["question"], "is not FROM=TO"),
    (["question=answer"], "'answer' is not a field the formats read"),
    (["q=prompt", "q=completion"], "renames 'q' twice"),
    (["q=prompt", "x=prompt"], "maps two fields to the same name"),
])
def test_a_bad_column_map_is_refused_naming_the_setting(tmp_path, tiny_tokenizer, pairs, words):
    job = TrainingJob(name="t", base_model_path=str(tmp_path), dataset_path=str(tmp_path), output_dir=str(tmp_path))
    job.data.column_map = pairs
    issues = [i for i in job.validate().issues if i.fields == ("data.column_map",)]
    assert len(issues) == 1 and words in issues[0].message and "data.column_map" in issues[0].message
    with pytest.raises(ValueError, match=words):
        load_dataset(_write(tmp_path / "d.jsonl", [{"q": "a", "x": "b"}]), tiny_tokenizer, job.data, 64)

