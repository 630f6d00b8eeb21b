"""Time `import directory` on a province-sized file (CSV and XLSX) in a scratch database.

    python bench/bench_directory_import.py [--villages 26017]

Uses DATABASE_URL's server (a database is created and dropped), else an embedded server.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import tempfile
import time
from pathlib import Path

import openpyxl
from common import scratch_database
from sqlalchemy.ext.asyncio import async_sessionmaker

from core.directory import COLUMNS, parse_directory
from storage.db import make_engine
from storage.directory import import_directory, read_directory_file
from storage.migrate import upgrade


def rows(villages: int) -> list[list[str]]:
    """Two posts per village; a contact officer covers five villages."""
    out = []
    for i in range(villages):
        station, village = f"41{i // 20:06d}", f"4101{i:08d}"
        common = [station, f"第{i // 20}派出所", village, f"{i}号村", "34.7500", "113.6200"]
        out.append([*common, f"R{i:06d}", f"驻村民警{i}", "resident"])
        out.append([*common, f"C{i // 5:06d}", f"包村民警{i // 5}", "contact"])
    return out


async def main(villages: int) -> None:
    data = rows(villages)
    with tempfile.TemporaryDirectory() as tmp:
        csv_path, xlsx_path = Path(tmp) / "province.csv", Path(tmp) / "province.xlsx"
        with csv_path.open("w", encoding="utf-8-sig", newline="") as f:
            csv.writer(f).writerows([COLUMNS, *data])
        book = openpyxl.Workbook(write_only=True)
        sheet = book.create_sheet()
        for row in [COLUMNS, *data]:
            sheet.append(list(row))
        book.save(xlsx_path)
        print(f"{len(data)} rows, {villages} villages")
        for path in (csv_path, xlsx_path):
            started = time.perf_counter()
            parsed = read_directory_file(path)
            read = time.perf_counter() - started
            parse_directory(parsed)
            parse = time.perf_counter() - started - read
            print(f"{path.suffix}: read {read:.2f}s, parse {parse:.2f}s")
        async with scratch_database() as url:
            engine = make_engine(url, pool_size=4)
            await upgrade(engine)
            sessions = async_sessionmaker(engine, expire_on_commit=False)
            for label, path in (("first", csv_path), ("again", csv_path), ("xlsx", xlsx_path)):
                started = time.perf_counter()
                report = await import_directory(sessions, path)
                elapsed = time.perf_counter() - started
                print(f"import {label} ({path.suffix}): {elapsed:.2f}s; {report.lines()[-1]}")
            await engine.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--villages", type=int, default=26_017)
    asyncio.run(main(parser.parse_args().villages))
