"""month tallies: each officer's month in each village as the quota counts it, kept by triggers

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04

`month_tallies` holds, per (month, officer, village) with at least one report, the distinct
visit days, the households, the patrols and the problems solved of the month's visit reports,
counted as storage.pace counted them from the reports (patrol lines; the lines of
core.activities.PROBLEM_SOLVING). Statement-level triggers on visit_reports and
visit_activities recompute the rows of the (officer, village, month) keys a statement touched
from the base tables (a handful of reports each), so that an insert, an edit (another day,
village or officer; other households; another count or code) and a delete all leave the row
right, whatever wrote them. Each recomputation first takes a transaction-level advisory lock
per officer, so that two transactions writing one officer's reports at once cannot each
store a tally that misses the other's report (READ COMMITTED: the second one recomputes after
the first commits, with a fresh snapshot).

The activity codes are written here as they are today: a change of the quota's codes needs a
migration that replaces the functions and runs BACKFILL again.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PATROL = "'patrol'"
PROBLEMS = "'dispute_mediation', 'resident_service', 'hardship_help', 'linkage_matter'"
QUOTA_CODES = f"{PATROL}, {PROBLEMS}"
# The two-int4 advisory lock class of the tallies (storage.locks.MONTH_TALLY), keyed by officer.
LOCK_CLASS = 0x5648_5441

# Every tally from the base tables, in one pass (the migration's backfill; bench_queries runs
# it after generating reports with the triggers disabled).
BACKFILL = f"""
INSERT INTO month_tallies (month, officer_id, village_id, visit_days, households, patrols,
                           problems_solved)
SELECT r.visit_date - extract(day FROM r.visit_date)::int + 1, r.officer_id, r.village_id,
       count(DISTINCT r.visit_date), sum(r.households),
       coalesce(sum(a.patrols), 0), coalesce(sum(a.problems), 0)
  FROM visit_reports r
  LEFT JOIN (SELECT report_id,
                    sum(count) FILTER (WHERE code = {PATROL}) AS patrols,
                    sum(count) FILTER (WHERE code IN ({PROBLEMS})) AS problems
               FROM visit_activities
              WHERE code IN ({QUOTA_CODES})
              GROUP BY report_id) a ON a.report_id = r.id
 GROUP BY 1, r.officer_id, r.village_id
"""

RECOMPUTE = f"""
CREATE FUNCTION month_tallies_recompute(officers integer[], villages integer[], days date[])
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(cardinality(officers), 0) = 0 THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock({LOCK_CLASS}, o)
       FROM (SELECT DISTINCT o FROM unnest(officers) o ORDER BY o) mine;
    WITH keys AS (
        SELECT DISTINCT o AS officer_id, v AS village_id, d - extract(day FROM d)::int + 1 AS month
          FROM unnest(officers, villages, days) k(o, v, d)
    ), fresh AS (
        SELECT k.month, k.officer_id, k.village_id,
               count(DISTINCT r.visit_date)::int AS visit_days,
               sum(r.households)::int AS households,
               coalesce(sum(a.patrols), 0)::int AS patrols,
               coalesce(sum(a.problems), 0)::int AS problems_solved
          FROM keys k
          JOIN visit_reports r
            ON r.officer_id = k.officer_id AND r.village_id = k.village_id
           AND r.visit_date >= k.month AND r.visit_date < (k.month + interval '1 month')::date
          LEFT JOIN LATERAL (
                SELECT sum(count) FILTER (WHERE code = {PATROL}) AS patrols,
                       sum(count) FILTER (WHERE code IN ({PROBLEMS})) AS problems
                  FROM visit_activities
                 WHERE report_id = r.id) a ON true
         GROUP BY k.month, k.officer_id, k.village_id
    ), emptied AS (
        DELETE FROM month_tallies t
         USING keys k
         WHERE t.month = k.month AND t.officer_id = k.officer_id AND t.village_id = k.village_id
           AND NOT EXISTS (SELECT FROM fresh f
                            WHERE f.month = k.month AND f.officer_id = k.officer_id
                              AND f.village_id = k.village_id)
    )
    INSERT INTO month_tallies AS t (month, officer_id, village_id, visit_days, households,
                                    patrols, problems_solved)
    SELECT * FROM fresh
    ON CONFLICT (month, officer_id, village_id) DO UPDATE
       SET visit_days = excluded.visit_days, households = excluded.households,
           patrols = excluded.patrols, problems_solved = excluded.problems_solved
     WHERE (t.visit_days, t.households, t.patrols, t.problems_solved)
           IS DISTINCT FROM (excluded.visit_days, excluded.households, excluded.patrols,
                             excluded.problems_solved);
END $$
"""

# The keys of the reports a statement inserted, deleted, or changed in what the tallies read.
REPORTS_TRIGGER = """
CREATE FUNCTION visit_reports_month_tallies() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM month_tallies_recompute(array_agg(officer_id), array_agg(village_id),
                                        array_agg(visit_date))
           FROM new_rows;
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM month_tallies_recompute(array_agg(officer_id), array_agg(village_id),
                                        array_agg(visit_date))
           FROM old_rows;
    ELSE
        PERFORM month_tallies_recompute(array_agg(officer_id), array_agg(village_id),
                                        array_agg(visit_date))
           FROM ((SELECT id, officer_id, village_id, visit_date, households FROM old_rows
                  EXCEPT
                  SELECT id, officer_id, village_id, visit_date, households FROM new_rows)
                 UNION ALL
                 (SELECT id, officer_id, village_id, visit_date, households FROM new_rows
                  EXCEPT
                  SELECT id, officer_id, village_id, visit_date, households FROM old_rows))
                changed;
    END IF;
    RETURN NULL;
END $$
"""

# The keys of the reports whose quota lines a statement inserted, deleted or changed (a
# report's lines deleted with it find no report: the report's own trigger recomputes).
ACTIVITIES_TRIGGER = f"""
CREATE FUNCTION visit_activities_month_tallies() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM month_tallies_recompute(array_agg(r.officer_id), array_agg(r.village_id),
                                        array_agg(r.visit_date))
           FROM visit_reports r
          WHERE r.id IN (SELECT report_id FROM new_rows WHERE code IN ({QUOTA_CODES}));
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM month_tallies_recompute(array_agg(r.officer_id), array_agg(r.village_id),
                                        array_agg(r.visit_date))
           FROM visit_reports r
          WHERE r.id IN (SELECT report_id FROM old_rows WHERE code IN ({QUOTA_CODES}));
    ELSE
        PERFORM month_tallies_recompute(array_agg(r.officer_id), array_agg(r.village_id),
                                        array_agg(r.visit_date))
           FROM visit_reports r
          WHERE r.id IN (SELECT report_id
                           FROM ((SELECT report_id, code, count FROM old_rows
                                  EXCEPT
                                  SELECT report_id, code, count FROM new_rows)
                                 UNION ALL
                                 (SELECT report_id, code, count FROM new_rows
                                  EXCEPT
                                  SELECT report_id, code, count FROM old_rows)) changed
                          WHERE code IN ({QUOTA_CODES}));
    END IF;
    RETURN NULL;
END $$
"""

TRIGGERS = [
    (table, function, event, referencing)
    for table, function in (
        ("visit_reports", "visit_reports_month_tallies"),
        ("visit_activities", "visit_activities_month_tallies"),
    )
    for event, referencing in (
        ("INSERT", "NEW TABLE AS new_rows"),
        ("UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
        ("DELETE", "OLD TABLE AS old_rows"),
    )
]


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "month_tallies",
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("officer_id", sa.Integer(), nullable=False),
        sa.Column("village_id", sa.Integer(), nullable=False),
        sa.Column("visit_days", sa.Integer(), nullable=False),
        sa.Column("households", sa.Integer(), nullable=False),
        sa.Column("patrols", sa.Integer(), nullable=False),
        sa.Column("problems_solved", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["officer_id"],
            ["officers.id"],
            name=op.f("fk_month_tallies_officer_id_officers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["village_id"],
            ["villages.id"],
            name=op.f("fk_month_tallies_village_id_villages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("month", "officer_id", "village_id", name=op.f("pk_month_tallies")),
    )
    op.execute(RECOMPUTE)
    op.execute(REPORTS_TRIGGER)
    op.execute(ACTIVITIES_TRIGGER)
    for table, function, event, referencing in TRIGGERS:
        op.execute(
            f"CREATE TRIGGER month_tallies_{event.lower()} AFTER {event} ON {table} "
            f"REFERENCING {referencing} FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
        )
    op.execute(BACKFILL)


def downgrade() -> None:
    """Downgrade schema."""
    for table, _, event, _ in TRIGGERS:
        op.execute(f"DROP TRIGGER month_tallies_{event.lower()} ON {table}")
    op.execute("DROP FUNCTION visit_activities_month_tallies()")
    op.execute("DROP FUNCTION visit_reports_month_tallies()")
    op.execute("DROP FUNCTION month_tallies_recompute(integer[], integer[], date[])")
    op.drop_table("month_tallies")
