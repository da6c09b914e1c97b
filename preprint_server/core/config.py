"""Server settings: one data directory holds everything (SQLite, files, Chroma)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field


class ServerSettings(BaseModel):
    data_dir: Path = Field(Path("preprint-data"), description="SQLite file, blobs, the Chroma and keyword indexes live here")
    chroma_url: str | None = Field(None, description="http://host:port of a standalone Chroma server; empty = on disk")
    private: bool = Field(False, description="reads need a lab key too")
    max_upload_bytes: int = Field(50 * 2**20, gt=0, description="largest request body (413 above)")
    max_file_bytes: int = Field(25 * 2**20, gt=0, description="largest single file (PDF, source, artifact)")
    max_body_chars: int = Field(2_000_000, gt=0, description="largest Markdown body")
    chunk_words: int = Field(180, ge=20, description="words per indexed chunk (fits MiniLM's 256 tokens)")
    chunk_overlap: int = Field(40, ge=0, description="words shared by neighbouring chunks")
    search_concurrency: int = Field(0, ge=0, description="searches run at once, the others wait in arrival order; "
                                                         "0 = one more than the CPU cores")
    reconcile_on_startup: bool = Field(True, description="index papers missing from Chroma at startup")
    chroma_retry_s: float = Field(2.0, gt=0, description="while a standalone Chroma server is lost: seconds between "
                                                      "tries to reach it again (then missing papers are re-added)")

    @property
    def db_path(self) -> Path:
        return self.data_dir / "preprints.db"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def chroma_dir(self) -> Path:
        return self.data_dir / "chroma"

    @property
    def keyword_dir(self) -> Path:
        return self.data_dir / "keywords"
