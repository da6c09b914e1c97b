"""The keyword index (tantivy), its reconciliation, the ONNX / torch embedding backends, and what building them prints."""

from __future__ import annotations

import logging
import shutil
import sqlite3
import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient

from preprint_server.app import create_app
from preprint_server.db import Database
from preprint_server.search import embedding, encoder, keyword, quantize, quiet
from preprint_server.search.keyword import KeywordDoc, KeywordIndex, passage_spans, passages
from preprint_server.search.snippets import keyword_snippet, query_terms
from tests.server.conftest import PAPERS, paper_json


def _doc(pid, title="", abstract="", body="", goal=""):
    return KeywordDoc(pid, goal, title, abstract, body)


def _ids(hits):
    return [h.paper_id for h in hits]


def test_keyword_index_stems_weights_titles_replaces_and_filters(tmp_path):
    kw = KeywordIndex(tmp_path / "kw")
    kw.add([
        _doc("a", title="Majority voting", body="chains of thought"),
        _doc("b", body="we vote over answers; majority wins", goal="g1"),
        _doc("c", body="protein retrieval"),
    ])
    assert kw.paper_ids() == {"a", "b", "c"}
    assert _ids(kw.search(["votes"], 10)) == ["a", "b"]  # stemmed; a title match outranks a body match
    assert _ids(kw.search(["votes"], 10, goal="g1")) == ["b"]
    assert kw.search(["zebra"], 10) == [] and kw.search([], 10) == []
    kw.add([_doc("a", body="nothing about elections")])  # same id: replaced, not duplicated
    assert _ids(kw.search(["votes"], 10)) == ["b"] and len(kw.paper_ids()) == 3
    kw.delete(["b"])
    assert kw.search(["majority"], 10) == []
    # the index is on disk: a second instance (another process, a restart) sees it
    assert KeywordIndex(tmp_path / "kw").paper_ids() == {"a", "c"}


def test_words_in_most_passages_are_left_out_of_large_indexes_only(tmp_path, monkeypatch):
    kw = KeywordIndex(tmp_path / "kw")
    two_passages = "a model sentence. " * 40  # "model" in 2 of a paper's 3 documents (head, passages)
    kw.add([_doc("rare", body="the zebra. " + two_passages), *[_doc(f"m{i}", body=two_passages) for i in range(4)]])
    everyone = {"rare", "m0", "m1", "m2", "m3"}
    assert set(_ids(kw.search(["model", "zebra"], 10))) == everyone  # small: every word counts
    monkeypatch.setattr(keyword, "COMMON_MIN_PASSAGES", 1)  # as large as the cutoff asks
    assert _ids(kw.search(["model", "zebra"], 10)) == ["rare"]  # "model" is in most documents: left out
    assert set(_ids(kw.search(["model"], 10))) == everyone  # nothing rarer: kept
    assert set(_ids(kw.search(["model", "okapi"], 10))) == everyone  # the rarer word occurs nowhere: kept


def test_query_words_are_never_query_syntax(tmp_path):
    kw = KeywordIndex(tmp_path / "kw")
    kw.add([
        _doc("ops", body="title AND body OR NOT x"),
        _doc("minus", body="a minus sign next to a plus sign"),
        _doc("zebra", title="Stripes", body="the zebra grazes"),
        _doc("quote", body="a quote inside a sentence"),
    ])
    # Every word is looked for as a word. Read as tantivy syntax, these queries would restrict
    # to a field (nothing has "zebra" in its title), exclude ("-minus"), or fail to parse.
    expected = {
        "title:zebra": {"zebra", "ops"},
        "-minus +plus *": {"minus"},
        "NOT x": {"ops"},
        "body AND (title": {"ops"},
        'quote " inside': {"quote"},
    }
    assert {q: set(_ids(kw.search(query_terms(q), 5))) for q in expected} == expected


def test_a_paper_ranks_by_its_best_passage_however_long_it_is(tmp_path):
    filler = "we sample chains at a temperature and count the votes within the token budget. " * 60
    kw = KeywordIndex(tmp_path / "kw")
    kw.add([
        _doc("deep", body=filler + "Every answer carries a modulo nine checksum. " + filler),
        _doc("short", body="a checksum of sorts " + "votes chains temperature " * 3),
        *[_doc(f"d{i}", body=filler[: 400 + 40 * i]) for i in range(5)],
    ])
    hits = kw.search(query_terms("checksum for votes of sampled chains"), 3)
    # the long paper's passage holds the rare word as densely as the short paper does: both first
    assert set(_ids(hits[:2])) == {"deep", "short"} and hits[0].score > 2 * hits[2].score
    deep = next(h for h in hits if h.paper_id == "deep")
    assert "modulo nine checksum" in passages(filler * 2 + " Every answer carries a modulo nine checksum.")[-1]
    deep_body = filler + "Every answer carries a modulo nine checksum. " + filler
    assert "checksum" in passages(deep_body)[deep.passage - 1]
    assert deep_body[slice(*deep.span)] == passages(deep_body)[deep.passage - 1]
    assert len(kw.paper_ids()) == 7  # papers, not passages


def test_passages_hold_whole_sentences_up_to_the_passage_size():
    from preprint_server.search.keyword import PASSAGE_WORDS

    sentences = [f"Sentence {i} has " + "some filler words " * (i % 5) + "and ends here." for i in range(60)]
    body = " ".join(sentences[:30]) + "\n\n" + " ".join(sentences[30:]) + " " + "unending " * (PASSAGE_WORDS + 7)
    found = passages(body)
    assert all(len(p.split()) <= PASSAGE_WORDS for p in found)
    assert " ".join(found).split() == body.split()  # every word once, in order: no overlap, nothing lost
    assert passages("") == [] and passages("  \n\n ") == [] and passages("One. Two!") == ["One. Two!"]
    for sentence in sentences:  # never cut, whatever the packing
        assert any(sentence in p for p in found)
    assert [body[a:b] for a, b in passage_spans(body)] == found


def test_the_snippet_is_the_matching_sentence_deep_in_a_paper_with_non_ascii_text(settings, embedder):
    # the index stores where each passage is (characters), SQLite cuts it out of the body: emoji,
    # accents and dashes before it must not shift the snippet
    filler = "Wir zählen Stimmen — naïve café voting 🙂 over sampled chains at a temperature. " * 40
    body = filler + "Every answer carries a modulo nine checksum before the vote. " + filler
    with TestClient(create_app(settings, embedder)) as c:
        assert c.post("/api/papers", json=paper_json("Deep idea", "Voting.", body), headers=_key(c)).status_code == 201
        hits = c.get("/api/search", params={"q": "modulo nine checksum", "k": 1}).json()
    assert "modulo nine checksum" in hits[0]["snippet"]


def test_an_index_of_the_older_whole_paper_layout_is_rebuilt(settings, embedder):
    with TestClient(create_app(settings, embedder)) as c:
        assert c.post("/api/papers", json=paper_json(*PAPERS[0]), headers=_key(c)).status_code == 201
    shutil.rmtree(settings.keyword_dir)
    _whole_paper_index(settings.keyword_dir)  # as an older server left it
    with TestClient(create_app(settings, embedder)) as c:  # the startup reconciliation refills it
        assert c.get("/health").json()["indexed_papers"] == 1
        assert c.get("/api/search", params={"q": "majority vote", "k": 1}).json()[0]["title"] == PAPERS[0][0]


def _whole_paper_index(path):
    import tantivy

    old = tantivy.SchemaBuilder()
    old.add_text_field("id", stored=True, tokenizer_name="raw")
    old.add_text_field("body", tokenizer_name="en_stem")
    path.mkdir(parents=True)
    index = tantivy.Index(old.build(), path=str(path))
    w = index.writer(15_000_000, 1)
    w.add_document(tantivy.Document(id="old", body="an old paper"))
    w.commit()
    w.wait_merging_threads()


def test_writers_from_two_instances_take_turns(tmp_path):
    first, second = KeywordIndex(tmp_path / "kw"), KeywordIndex(tmp_path / "kw")
    errors = []

    def write(index, prefix):
        try:
            for i in range(5):
                index.add([_doc(f"{prefix}{i}", body=f"paper {prefix} number {i}")])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(ix, p)) for ix, p in ((first, "x"), (second, "y"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert KeywordIndex(tmp_path / "kw").paper_ids() == {f"{p}{i}" for p in "xy" for i in range(5)}


class CountingEmbedder:
    """Wraps the real embedder and counts the texts it embeds for papers."""

    def __init__(self, inner):
        self.inner, self.embedded, self.dim = inner, 0, inner.dim

    def embed(self, texts, batch_size=32):
        self.embedded += len(texts)
        return self.inner.embed(texts, batch_size)

    def embed_query(self, q):
        return self.inner.embed_query(q)

    def warm(self):
        pass


def test_lost_keyword_index_is_rebuilt_at_startup_without_reembedding(settings, embedder):
    with TestClient(create_app(settings, embedder)) as c:
        key = _key(c)
        for title, abstract, body in PAPERS:
            assert c.post("/api/papers", json=paper_json(title, abstract, body), headers=key).status_code == 201
        before = c.get("/api/search", params={"q": "majority vote", "k": 3}).json()
    shutil.rmtree(settings.keyword_dir)
    counting = CountingEmbedder(embedder)
    with TestClient(create_app(settings, counting)) as c:
        assert c.get("/health").json()["indexed_papers"] == 3
        assert c.get("/api/search", params={"q": "majority vote", "k": 3}).json() == before
    assert counting.embedded == 0  # only the keyword index was missing


def test_keyword_write_failure_takes_the_vectors_back_out(client, app, auth, monkeypatch):
    svc = app.state.services

    def boom(docs):
        if list(docs):  # startup reconciliation adds nothing
            raise OSError("disk full")
    monkeypatch.setattr(svc.index.keywords, "add", boom)
    with TestClient(app, raise_server_exceptions=False) as c:
        assert c.post("/api/papers", json=paper_json("doomed"), headers=auth).status_code == 500
    assert svc.index.collection.count() == 0
    monkeypatch.undo()
    assert client.get("/api/papers").json()["total"] == 0


def test_an_old_fts5_table_is_dropped(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as con:
        con.execute("CREATE VIRTUAL TABLE paper_fts USING fts5(paper_id UNINDEXED, title, abstract, body)")
    Database(path).close()
    with sqlite3.connect(path) as con:
        assert not con.execute("SELECT name FROM sqlite_master WHERE name = 'paper_fts'").fetchall()


def test_snippet_finds_the_densest_window_of_query_terms():
    body = "Voting helps. " + "filler words here " * 40 + "We vote by majority over sampled chains. " + "end " * 40
    s = keyword_snippet(body, ["votes", "majority", "chains"])
    assert "majority over sampled chains" in s and s.startswith("… ")
    assert keyword_snippet("İstanbul voting", ["voting"]) == "İstanbul voting"  # lowercasing changes offsets
    assert keyword_snippet("nothing relevant", ["zebra"]) == ""


def _key(c):
    from preprint_server import crud

    return {"Authorization": f"Bearer {crud.create_key(c.app.state.services.db, 'lab-k')}"}


# -- embedding backends --------------------------------------------------------------------------
def test_onnx_vectors_match_sentence_transformers(embedder):
    assert embedder.backend.name == "onnx"
    torch_embedder = embedding.Embedder(backend="torch")
    texts = ["majority vote", "a longer passage about protein retrieval " * 60, "ünïcode wörds"]
    a, b = np.array(embedder.embed(texts)), np.array(torch_embedder.embed(texts))
    assert (a * b).sum(1).min() > 0.9999
    fp32_queries = embedding.Embedder(query_precision="fp32")
    assert fp32_queries.backend.query_precision == "fp32"
    q = np.array(fp32_queries.embed_query("majority vote"))
    assert float(q @ b[0]) > 0.9999 and abs(np.linalg.norm(q) - 1) < 1e-5


# Searches the calibration never saw (the int8 graph is calibrated on quantize.CALIBRATION)
HELD_OUT = [
    "does sampling more chains beat a bigger model on word problems",
    "verifier trained on synthetic errors",
    "which paper reported the largest gain on MATH-500 with a 1B model?",
    "Zero-shot prompting versus few-shot exemplars retrieved by topic similarity for geometry questions",
    "protein folding",
    "a report whose baseline was measured on a different split",
    "ünïcode wörds and émojis 🙂 in a query",
    "We found that pruning low-confidence chains before the vote saved 30% of the tokens at equal accuracy.",
]


def test_int8_query_vectors_stay_close_to_fp32(embedder):
    assert embedder.backend.query_precision == "int8"
    fp32 = embedding.Embedder(query_precision="fp32")
    a = np.array([embedder.embed_query(t) for t in HELD_OUT])
    b = np.array(fp32.embed(HELD_OUT))
    cos = (a * b).sum(1)
    assert cos.min() > 0.99 and cos.mean() > 0.995, cos
    assert np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-4)
    # the nearest text is the same whichever way the query was embedded
    assert ((a @ b.T).argmax(1) == np.arange(len(HELD_OUT))).all()


def test_int8_query_graph_is_made_once_and_falls_back_to_fp32(tmp_path, monkeypatch, caplog, capfd):
    monkeypatch.setenv("AGENTLAB_CACHE_DIR", str(tmp_path))
    with caplog.at_level(logging.DEBUG):
        assert embedding.load_backend().query_precision == "int8"  # exported and quantized here
    assert quantize.query_onnx_path().exists()
    # what the libraries say while building the graphs goes to our log, not to the terminal
    advice = [r for r in caplog.records if "pre-processing before quantization" in r.getMessage()]
    assert [(r.name, r.levelno) for r in advice] == [("preprint_server.search.quantize", logging.DEBUG)]
    assert "Loading weights" not in capfd.readouterr().err
    caplog.clear()
    monkeypatch.setattr(quantize, "quantize_for_queries", lambda src, dest: pytest.fail("quantized twice"))
    assert embedding.load_backend().query_precision == "int8"
    quantize.query_onnx_path().unlink()

    def broken(src, dest):
        raise RuntimeError("quantizer unavailable")
    monkeypatch.setattr(quantize, "quantize_for_queries", broken)
    with caplog.at_level(logging.WARNING, logger="preprint_server.search.embedding"):
        backend = embedding.load_backend()
    assert backend.name == "onnx" and backend.query_precision == "fp32" and "quantizer unavailable" in caplog.text
    assert not list(tmp_path.glob("onnx/*.tmp"))  # nothing half-written
    monkeypatch.setenv("AGENTLAB_EMBED_QUERY_PRECISION", "fp32")
    assert embedding.load_backend().query_precision == "fp32"
    monkeypatch.setenv("AGENTLAB_EMBED_QUERY_PRECISION", "int4")
    with pytest.raises(ValueError, match="int8 or fp32"):
        embedding.load_backend()


def test_failed_export_falls_back_to_torch_with_a_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("AGENTLAB_CACHE_DIR", str(tmp_path))

    def broken(dest):
        raise RuntimeError("exporter unavailable")
    monkeypatch.setattr(encoder, "export_onnx", broken)
    with caplog.at_level(logging.WARNING, logger="preprint_server.search.embedding"):
        backend = embedding.load_backend()
    assert backend.name == "torch" and "exporter unavailable" in caplog.text
    with pytest.raises(RuntimeError):
        embedding.load_backend(backend="onnx")  # asked for explicitly: no silent fallback


def test_exported_graph_is_cached_and_env_can_force_torch(tmp_path, monkeypatch):
    monkeypatch.setenv("AGENTLAB_CACHE_DIR", str(tmp_path))
    assert embedding.load_backend().name == "onnx"
    assert encoder.onnx_path().exists()
    monkeypatch.setattr(encoder, "export_onnx", lambda dest: pytest.fail("exported twice"))
    assert embedding.load_backend().name == "onnx"
    monkeypatch.setenv("AGENTLAB_EMBED_BACKEND", "torch")
    assert embedding.load_backend().name == "torch"


def _log_as_onnxruntime_does() -> None:
    """Straight on the root logger, as onnxruntime's quantizer logs its advice."""
    logging.warning("consider pre-processing")  # noqa: LOG015
    logging.error("the quantizer failed")  # noqa: LOG015


def test_root_logger_records_of_a_library_go_to_our_log_and_errors_still_show(caplog, capsys):
    ours = logging.getLogger("preprint_server.search.test")
    root = logging.getLogger()
    with caplog.at_level(logging.DEBUG), quiet.root_logging_to(ours):
        _log_as_onnxruntime_does()
        logging.getLogger("other").warning("a named logger's warning")
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("preprint_server.search.test", logging.DEBUG, "warning: consider pre-processing"),
        ("root", logging.ERROR, "the quantizer failed"),
        ("other", logging.WARNING, "a named logger's warning")]
    # an application that configured no logging: no stderr handler is added (logging.warning would
    # call basicConfig), and errors still reach stderr through Python's last-resort handler
    saved, root.handlers = root.handlers, []
    try:
        with quiet.root_logging_to(ours):
            _log_as_onnxruntime_does()
        assert root.handlers == []
    finally:
        root.handlers = saved
    assert capsys.readouterr().err == "the quantizer failed\n"
