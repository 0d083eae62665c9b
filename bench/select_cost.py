"""Diagnostic: CPU per execution of the delivery engine's flow-settings select, three ways:
built per call from ORM attributes (what ``release.settings_of`` ran until the fifth look),
built per call from Core columns (until the sixth look), and built once with an expanding bind
parameter (what it runs now: ``release._settings_select()``, whose cache key SQLAlchemy then
computes once). In-process, one thread, on a real database. The last line is the ratios.

    .venv/bin/python bench/select_cost.py --db postgres
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import common_args, create_team, log, reset  # noqa: E402


def main() -> None:
    parser = common_args(__doc__ or "")
    parser.add_argument("-n", type=int, default=2000)
    args = parser.parse_args()
    env = reset(args.db)
    create_team(env, "http://127.0.0.1:9/hook")
    os.environ.update(env)
    import sqlalchemy as sa

    from dispatched import create_app
    from dispatched.extensions import db
    from dispatched.models import Project, Team

    app = create_app()
    with app.app_context():
        ids = list(db.session.execute(sa.select(Project.id)).scalars())
        projects, teams = Project.__table__, Team.__table__

        def orm() -> None:
            db.session.execute(
                sa.select(Project.id, Project.parallelism, Project.rate_per_second, Team.plan)
                .select_from(Project)
                .join(Team, Team.id == Project.team_id)
                .where(Project.id.in_(ids))
            ).all()

        def core() -> None:
            db.session.execute(
                sa.select(
                    projects.c.id,
                    projects.c.parallelism,
                    projects.c.rate_per_second,
                    teams.c.plan,
                )
                .select_from(projects)
                .join(teams, teams.c.id == projects.c.team_id)
                .where(projects.c.id.in_(ids))
            ).all()

        from dispatched.jobs.release import _settings_select

        def prebuilt() -> None:
            db.session.execute(_settings_select(), {"ids": ids}).all()

        def cost(run: Callable[[], None]) -> float:
            for _ in range(200):  # warm the statement cache and the connection
                run()
            start = time.process_time()
            for _ in range(args.n):
                run()
            return (time.process_time() - start) / args.n * 1e6

        results: dict[str, list[float]] = {"orm": [], "core": [], "prebuilt": []}
        for _ in range(3):  # interleaved, so drift hits each alike
            results["orm"].append(cost(orm))
            results["core"].append(cost(core))
            results["prebuilt"].append(cost(prebuilt))
        db.session.rollback()
    best = {name: min(values) for name, values in results.items()}
    for name, values in results.items():
        log(f"  {name:>8}: {', '.join(f'{v:.0f}' for v in values)} µs CPU per execution")
    log(
        f"RATIO CPU per execution [{args.db}]: core / ORM = {best['core'] / best['orm']:.2f}, "
        f"prebuilt / core = {best['prebuilt'] / best['core']:.2f}  ({best['orm']:.0f} / "
        f"{best['core']:.0f} / {best['prebuilt']:.0f} µs, best of 3 x {args.n})"
    )


if __name__ == "__main__":
    main()
