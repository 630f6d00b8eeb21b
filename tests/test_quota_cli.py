"""`villagebeat quota`: overrides per station and village, and the quota they put in force."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.quota import Quota, profile
from storage.overview import village_month
from tests.factories import Directory
from tests.test_cli import villagebeat


async def _quotas(sessions: async_sessionmaker[AsyncSession], directory: Directory) -> list[Quota]:
    officer = directory.officers[0]
    async with sessions() as s:
        return [
            (
                await village_month(
                    s,
                    officer_id=officer.id,
                    village_id=v.id,
                    day=date(2026, 11, 15),
                    county=profile("xi"),
                )
            )[0]
            for v in directory.villages
        ]


async def test_station_and_village_overrides(
    db_env: dict[str, str], sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    xi = Quota(visit_days=4, households=4)
    assert await _quotas(sessions, directory) == [xi, xi, xi]

    result = villagebeat("quota", "set", "--station", "S01", "--profile", "changde", env=db_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "station S01: profile changde"
    result = villagebeat("quota", "set", "--village", "V002", "--households", "12", env=db_env)
    assert result.stdout.strip() == "village V002: households 12"

    changde = Quota(visit_days=4, households=10, patrols=2, problems_solved=5)
    v2 = Quota(visit_days=4, households=12, patrols=2, problems_solved=5)
    assert await _quotas(sessions, directory) == [changde, v2, xi]  # V003 is in station S02

    shown = villagebeat("quota", "show", env=db_env).stdout.splitlines()
    assert (
        shown[0]
        == "county: xi (profile xi, visit days 4, households 4, patrols 0, problems solved 0)"
    )
    assert shown[1:] == [
        "station S01 城关派出所: profile changde",
        "village V002 李庄村: households 12",
    ]
    cleared = villagebeat("quota", "clear", "--station", "S01", env=db_env)
    assert cleared.stdout.strip() == "station S01: override removed"
    assert await _quotas(sessions, directory) == [xi, Quota(visit_days=4, households=12), xi]


@pytest.mark.usefixtures("directory")
@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (
            ["quota", "set", "--station", "S99", "--households", "3"],
            1,
            "no station with code 'S99'",
        ),
        (["quota", "set", "--village", "V001"], 1, "give --profile and/or at least one counter"),
        (["quota", "set", "--village", "V001", "--profile", "mars"], 2, "invalid choice"),
        (["quota", "set", "--village", "V001", "--households", "-3"], 2, "expected a whole number"),
        (["quota", "clear", "--village", "V404"], 1, "no village with code 'V404'"),
    ],
)
def test_bad_input_is_one_line(
    db_env: dict[str, str], args: list[str], code: int, fragment: str
) -> None:
    result = villagebeat(*args, env=db_env)
    assert result.returncode == code
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0], result.stderr
