"""Bad input raises the documented exception, with the engine's message; nothing panics into Python."""

import pytest

import qinfer
from conftest import MINILM


@pytest.fixture(scope="module")
def model(minilm):
    return qinfer.TextEmbedding(minilm)


def test_bad_texts_raise_value_error(model):
    with pytest.raises(ValueError, match="texts is empty"):
        model.encode([])
    with pytest.raises(ValueError, match=r"texts\[1\] is int, not a string"):
        model.encode(["a", 3])
    with pytest.raises(ValueError, match=r"texts\[0\] is empty"):
        model.encode(["  "])
    with pytest.raises(ValueError, match="a string or a list of strings"):
        model.encode(42)
    with pytest.raises(ValueError, match="batch_size"):
        model.encode(["a"], batch_size=0)
    with pytest.raises(ValueError, match="prompt"):
        model.encode(["a"], prompt_name="query")


def test_a_missing_model_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model at"):
        qinfer.TextEmbedding("/nonexistent/model")
    with pytest.raises(FileNotFoundError, match="no plan file"):
        qinfer.TextEmbedding(str(MINILM), plan=tmp_path / "absent.toml")


def test_bad_quantization_arguments_raise_value_error(minilm):
    with pytest.raises(ValueError, match="w9a9"):
        qinfer.TextEmbedding(minilm, quant="w9a9")
    with pytest.raises(ValueError, match="unknown scheme \"int7\""):
        qinfer.TextEmbedding(minilm, plan={"default": "int7"})
    with pytest.raises(ValueError, match="threads"):
        qinfer.TextEmbedding(minilm, threads=0)


def test_a_model_of_another_task_names_the_class_to_use(minilm, reranker_model, smollm2):
    with pytest.raises(ValueError, match="qinfer.Reranker"):
        qinfer.TextEmbedding(reranker_model)
    with pytest.raises(ValueError, match="qinfer.TextEmbedding"):
        qinfer.Reranker(minilm)
    with pytest.raises(ValueError, match="qinfer.Generator"):
        qinfer.TextEmbedding(smollm2)


def test_engine_failures_raise_runtime_error(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "bert", "architectures": ["BertModel"]}')
    with pytest.raises(RuntimeError):
        qinfer.TextEmbedding(str(broken))


def test_bad_generation_arguments_raise_value_error(smollm2):
    generator = qinfer.Generator(smollm2)
    with pytest.raises(ValueError, match="prompt is empty"):
        generator.generate("")
    with pytest.raises(ValueError, match="temperature"):
        generator.generate("Hello", temperature=-1)
    with pytest.raises(ValueError, match="top-p"):
        generator.generate("Hello", top_p=0)
