"""Server-rendered HTML pages (Jinja2). Every asset is served from /static: no CDN."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from preprint_server import crud, goals, progress, replication
from preprint_server.api.deps import ServicesDep, read_access
from preprint_server.api.routes.search import run_search
from preprint_server.render import breakable, render_paper_body

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).resolve().parents[2] / "templates"))
TEMPLATES.env.filters["pct"] = lambda v: "" if v is None else f"{100 * v:.1f}%"
TEMPLATES.env.filters["day"] = lambda d: d.strftime("%Y-%m-%d %H:%M")
TEMPLATES.env.filters["breakable"] = breakable

router = APIRouter(include_in_schema=False, dependencies=[Depends(read_access)])


def progress_chart(points: list[tuple[int, float]], w: int = 360, h: int = 160, pad: int = 30) -> dict:
    """Step-line coordinates for "best accuracy (ranked records) vs papers published" (drawn as SVG)."""
    if not points:
        return {}
    xmax = max(points[-1][0], 1)
    lo, hi = min(a for _, a in points), max(a for _, a in points)
    lo, hi = max(0.0, lo - 0.05), min(1.0, hi + 0.05)
    sx = lambda x: pad + (w - 2 * pad) * x / xmax
    sy = lambda a: h - pad - (h - 2 * pad) * (a - lo) / ((hi - lo) or 1)
    path, prev = [], None
    for x, a in points:
        if prev is not None:
            path.append(f"{sx(x):.1f},{sy(prev):.1f}")  # hold the old best until the next paper
        path.append(f"{sx(x):.1f},{sy(a):.1f}")
        prev = a
    dots = [(round(sx(x), 1), round(sy(a), 1), x, a) for x, a in points]
    return {"w": w, "h": h, "pad": pad, "path": " ".join(path), "dots": dots, "xmax": xmax, "lo": lo, "hi": hi}


def _page(request: Request, name: str, status_code: int = 200, **ctx) -> HTMLResponse:
    return TEMPLATES.TemplateResponse(request, name, ctx, status_code=status_code)


@router.get("/", response_class=HTMLResponse)
def home(request: Request, svc: ServicesDep):
    recent, total = crud.list_papers(svc.db, limit=10)
    boards = []
    for bench in crud.benchmarks(svc.db):
        groups = crud.leaderboard_groups(crud.leaderboard(svc.db, benchmark=bench))
        for g in groups:
            g["chart"] = progress_chart(crud.progress(svc.db, bench, g["subset"], g["model"]))
        if groups:
            boards.append({"benchmark": bench, "groups": groups})
    return _page(request, "home.html", papers=recent, total=total, goals=crud.list_goals(svc.db, "open"), boards=boards)


@router.get("/search", response_class=HTMLResponse)
def search_page(request: Request, svc: ServicesDep, q: str = "", goal: str | None = None):
    q = q.strip()[:1000]
    hits = run_search(svc, q, 20, goal or None) if q else []
    return _page(request, "search.html", q=q, goal=goal or "", hits=hits)


@router.get("/papers/{paper_id}", response_class=HTMLResponse)
def paper_page(request: Request, paper_id: str, svc: ServicesDep):
    paper = crud.get_paper(svc.db, paper_id)
    return _page(
        request, "paper.html", paper=paper, body_html=render_paper_body(paper.body, paper.title, paper.abstract),
        cites=crud.citations(svc.db, paper_id), cited_by=crud.citations(svc.db, paper_id, cited_by=True),
        relations=crud.citation_relations(svc.db, paper_id),
        has_pdf=any(f.kind == "pdf" for f in paper.files), has_source=any(f.kind == "source" for f in paper.files),
        artifacts=[f for f in paper.files if f.kind == "artifact"],
        replications=[replication.replication_out(r) for r in paper.replications],
        replication=replication.summary(paper.replications, paper.lab_id),
    )


@router.get("/labs/{lab}", response_class=HTMLResponse)
def lab_page(request: Request, lab: str, svc: ServicesDep):
    crud.get_lab(svc.db, lab)
    papers, total = crud.list_papers(svc.db, lab=lab, limit=100)
    return _page(request, "lab.html", lab=lab, papers=papers, total=total)


@router.get("/goals/{goal_id}", response_class=HTMLResponse)
def goal_page(request: Request, goal_id: str, svc: ServicesDep):
    crud.get_goal(svc.db, goal_id)
    papers, total = crud.list_papers(svc.db, goal=goal_id, limit=100)
    prog = progress.goal_progress(svc.db, goal_id)
    return _page(request, "goal.html", goal=prog.goal, papers=papers, total=total,
                 groups=crud.leaderboard_groups(crud.leaderboard(svc.db, goal=goal_id)),
                 charts=progress.page_charts(prog), leases=goals.leases(svc.db, goal_id)[:20],
                 duration=progress.duration)
