"""The search engine: papers embedded in chunks (Chroma) and indexed by passage (tantivy, BM25), one
query searching both and fusing the scores. This package is the only way in for the rest of the server:

    index = SearchIndex(settings, embedder)      # app.py: one per server
    index.search(conn, q, k, goal) -> [Hit]      # routes: hybrid search
    index.prepare(...); index.add([...])         # crud.py: a published paper, written with its row

Inside: index.py (SearchIndex), vectors.py (the Chroma collection: files, or a standalone server that
may go away and come back), keyword.py (tantivy), ranking.py (score fusion), snippets.py, gate.py
(searches a few at a time), embedding.py (the Embedder) on encoder.py (the ONNX graph) and quantize.py
(its int8 copy for queries), quiet.py (third-party output to the log).
"""

from preprint_server.search.embedding import Embedder, default_embedder
from preprint_server.search.index import Hit, SearchIndex
from preprint_server.search.keyword import KeywordIndexBusy

__all__ = ["Embedder", "Hit", "KeywordIndexBusy", "SearchIndex", "default_embedder"]
