"""The database schema. Enumerations are text with CHECK constraints, easy to migrate."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Double,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from core.requests import Actor, Event, RequestCategory, RequestStatus
from core.roles import AssignmentKind, InviteKind, Role

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _one_of(column: str, values: type[Any]) -> str:
    return f"{column} IN ({', '.join(repr(v.value) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Timestamped:
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class Station(Timestamped, Base):
    __tablename__ = "stations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))


class Village(Timestamped, Base):
    __tablename__ = "villages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    station_id: Mapped[int] = mapped_column(ForeignKey("stations.id"), index=True)
    latitude: Mapped[float | None] = mapped_column(Double)
    longitude: Mapped[float | None] = mapped_column(Double)
    # The public join link's secret part; random so that villages cannot be enumerated.
    join_token: Mapped[str] = mapped_column(String(32), unique=True)

    station: Mapped[Station] = relationship(lazy="raise")


class Officer(Timestamped, Base):
    __tablename__ = "officers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    badge: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))


class Assignment(Base):
    __tablename__ = "assignments"
    __table_args__ = (
        UniqueConstraint("officer_id", "village_id"),
        # One resident and at most one contact officer per village.
        UniqueConstraint("village_id", "kind", name="uq_assignments_village_kind"),
        CheckConstraint(_one_of("kind", AssignmentKind), name="kind"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    officer_id: Mapped[int] = mapped_column(ForeignKey("officers.id"), index=True)
    village_id: Mapped[int] = mapped_column(ForeignKey("villages.id"))
    kind: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Supervisor(Base):
    __tablename__ = "supervisors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    county_wide: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class SupervisorStation(Base):
    __tablename__ = "supervisor_stations"

    supervisor_id: Mapped[int] = mapped_column(
        ForeignKey("supervisors.id", ondelete="CASCADE"), primary_key=True
    )
    station_id: Mapped[int] = mapped_column(ForeignKey("stations.id"), primary_key=True)


class User(Timestamped, Base):
    """A Telegram account; the primary key is Telegram's user id."""

    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint(_one_of("role", Role), name="role"),
        CheckConstraint(
            "(role = 'officer') = (officer_id IS NOT NULL)"
            " AND (role = 'supervisor') = (supervisor_id IS NOT NULL)",
            name="role_binding",
        ),
        CheckConstraint("locale IN ('zh', 'en')", name="locale"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    role: Mapped[str] = mapped_column(String(16), server_default=Role.STRANGER.value)
    officer_id: Mapped[int | None] = mapped_column(ForeignKey("officers.id"), unique=True)
    supervisor_id: Mapped[int | None] = mapped_column(ForeignKey("supervisors.id"), unique=True)
    # The language chosen with /language; NULL follows Telegram's language_code.
    locale: Mapped[str | None] = mapped_column(String(8))
    language_code: Mapped[str | None] = mapped_column(String(16))
    first_name: Mapped[str] = mapped_column(String(200), server_default="")
    last_name: Mapped[str | None] = mapped_column(String(200))
    username: Mapped[str | None] = mapped_column(String(64))
    phone: Mapped[str | None] = mapped_column(String(32))
    blocked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Invite(Base):
    """A one-time join link for an officer or a supervisor. Only the payload's hash is kept."""

    __tablename__ = "invites"
    __table_args__ = (
        CheckConstraint(_one_of("kind", InviteKind), name="kind"),
        CheckConstraint("(kind = 'officer') = (officer_id IS NOT NULL)", name="officer_target"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    officer_id: Mapped[int | None] = mapped_column(ForeignKey("officers.id"), index=True)
    supervisor_name: Mapped[str | None] = mapped_column(String(200))
    county_wide: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    station_ids: Mapped[list[int]] = mapped_column(
        ARRAY(Integer), server_default=text("'{}'::integer[]")
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    used_by: Mapped[int | None] = mapped_column(BigInteger)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class JoinFailure(Base):
    """A /start with a join link that led nowhere (malformed, unknown invite or village):
    counted per account so that guessing links is cut off."""

    __tablename__ = "join_failures"
    __table_args__ = (Index("ix_join_failures_user_at", "user_id", "at"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class VillagerMembership(Base):
    """Which village a villager belongs to; history is kept, one membership is current."""

    __tablename__ = "villager_memberships"
    __table_args__ = (
        Index(
            "uq_villager_memberships_current",
            "user_id",
            unique=True,
            postgresql_where=text("left_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    village_id: Mapped[int] = mapped_column(ForeignKey("villages.id"), index=True)
    joined_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    left_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ConversationState(Base):
    """aiogram FSM state and data, one row per storage key."""

    __tablename__ = "conversation_states"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, index=True)
    chat_id: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class ProcessedUpdate(Base):
    """Telegram update ids already applied: a redelivered update is recognised and skipped."""

    __tablename__ = "processed_updates"

    update_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    processed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), index=True
    )
    # The answers to the update, written in its transaction and taken (set to NULL) by
    # whoever sends them: a process that dies between commit and answer leaves them here
    # for the update's redelivery.
    answers: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)


class FailedUpdate(Base):
    """Updates whose handling raised. After a few attempts one is set aside here (dead) so
    that it stops blocking the updates behind it; the payload allows a replay."""

    __tablename__ = "failed_updates"

    update_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    attempts: Mapped[int] = mapped_column(Integer)
    error: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    dead: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    first_failed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    last_failed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class QuotaOverride(Base):
    """A station's or a village's quota where it differs from the county's profile."""

    __tablename__ = "quota_overrides"
    __table_args__ = (
        CheckConstraint("(station_id IS NULL) <> (village_id IS NULL)", name="one_scope"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    station_id: Mapped[int | None] = mapped_column(ForeignKey("stations.id"), unique=True)
    village_id: Mapped[int | None] = mapped_column(ForeignKey("villages.id"), unique=True)
    profile: Mapped[str | None] = mapped_column(String(32))
    visit_days: Mapped[int | None] = mapped_column(Integer)
    households: Mapped[int | None] = mapped_column(Integer)
    patrols: Mapped[int | None] = mapped_column(Integer)
    problems_solved: Mapped[int | None] = mapped_column(Integer)


class VisitReport(Base):
    """One officer's day in one village. `draft_id` makes a double Submit store it once."""

    __tablename__ = "visit_reports"
    __table_args__ = (
        Index("ix_visit_reports_officer_date", "officer_id", "visit_date"),
        Index("ix_visit_reports_village_date", "village_id", "visit_date"),
        # A month of every officer's visits (quota nudges, scores) read from the index alone.
        Index(
            "ix_visit_reports_date_covering",
            "visit_date",
            postgresql_include=["officer_id", "village_id", "households", "id"],
        ),
        # The week's reports for the spot checks.
        Index("ix_visit_reports_submitted_at", "submitted_at"),
        CheckConstraint("hours > 0 AND hours <= 24", name="hours"),
        CheckConstraint("households >= 0", name="households"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    draft_id: Mapped[str] = mapped_column(String(32), unique=True)
    officer_id: Mapped[int] = mapped_column(ForeignKey("officers.id"))
    village_id: Mapped[int] = mapped_column(ForeignKey("villages.id"))
    visit_date: Mapped[date] = mapped_column(Date)
    hours: Mapped[Decimal] = mapped_column(Numeric(4, 1))
    households: Mapped[int] = mapped_column(Integer)
    latitude: Mapped[float | None] = mapped_column(Double)
    longitude: Mapped[float | None] = mapped_column(Double)
    distance_m: Mapped[int | None] = mapped_column(Integer)
    # Filed from farther than the configured radius from the village centre.
    far_from_village: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    notes: Mapped[str | None] = mapped_column(Text)
    submitted_by: Mapped[int] = mapped_column(BigInteger)
    submitted_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class VisitActivity(Base):
    __tablename__ = "visit_activities"
    __table_args__ = (
        # The activity lines of a month's reports read from the index alone (the primary key
        # lacks the count).
        Index("ix_visit_activities_covering", "report_id", postgresql_include=["code", "count"]),
    )

    report_id: Mapped[int] = mapped_column(
        ForeignKey("visit_reports.id", ondelete="CASCADE"), primary_key=True
    )
    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)


class Hazard(Base):
    __tablename__ = "hazards"
    __table_args__ = (
        Index("ix_hazards_village_status", "village_id", "status"),
        Index("ix_hazards_officer_status", "officer_id", "status"),
        CheckConstraint("status IN ('open', 'rectified', 'handed_over')", name="status"),
        CheckConstraint("severity IN ('low', 'medium', 'high')", name="severity"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    draft_id: Mapped[str] = mapped_column(String(32), unique=True)
    officer_id: Mapped[int] = mapped_column(ForeignKey("officers.id"))
    village_id: Mapped[int] = mapped_column(ForeignKey("villages.id"))
    category: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(Text)
    latitude: Mapped[float | None] = mapped_column(Double)
    longitude: Mapped[float | None] = mapped_column(Double)
    distance_m: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), server_default="open")
    reported_by: Mapped[int] = mapped_column(BigInteger)
    reported_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    # Re-inspection due date; set for high severity.
    due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # 'rectified' with an after photo, or the department it was handed to.
    closed_how: Mapped[str | None] = mapped_column(String(64))
    closing_note: Mapped[str | None] = mapped_column(Text)


class Photo(Base):
    """A photo kept as Telegram ids, downloaded in the background into DATA_DIR/media."""

    __tablename__ = "photos"
    __table_args__ = (
        CheckConstraint(
            "(visit_report_id IS NOT NULL)::int + (hazard_id IS NOT NULL)::int = 1",
            name="one_owner",
        ),
        CheckConstraint("role IN ('evidence', 'after')", name="role"),
        Index("ix_photos_pending", "next_attempt_at", postgresql_where=text("sha256 IS NULL")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    visit_report_id: Mapped[int | None] = mapped_column(
        ForeignKey("visit_reports.id", ondelete="CASCADE"), index=True
    )
    hazard_id: Mapped[int | None] = mapped_column(
        ForeignKey("hazards.id", ondelete="CASCADE"), index=True
    )
    # 'after' is the photo proving a hazard was rectified.
    role: Mapped[str] = mapped_column(String(16), server_default="evidence")
    position: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    file_id: Mapped[str] = mapped_column(String(256))
    file_unique_id: Mapped[str] = mapped_column(String(64), index=True)
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    path: Mapped[str | None] = mapped_column(Text)
    size: Mapped[int | None] = mapped_column(Integer)
    # The same picture (same file_unique_id or same bytes) was used in another report.
    reused: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    downloaded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Absence(Base):
    """A village day that could not happen, reported with a reason; not a visit."""

    __tablename__ = "absences"
    __table_args__ = (Index("ix_absences_officer_day", "officer_id", "day"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    draft_id: Mapped[str] = mapped_column(String(32), unique=True)
    officer_id: Mapped[int] = mapped_column(ForeignKey("officers.id"))
    village_id: Mapped[int] = mapped_column(ForeignKey("villages.id"))
    day: Mapped[date] = mapped_column(Date)
    reason: Mapped[str] = mapped_column(Text)
    reported_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class OutboxMessage(Base):
    """A message to someone other than the person being answered, written in the transaction
    that caused it and sent by the delivery worker (scheduler.outbox)."""

    __tablename__ = "outbox_messages"
    __table_args__ = (
        CheckConstraint(
            "method IN ('sendMessage', 'sendPhoto', 'sendDocument', 'sendLocation')",
            name="method",
        ),
        CheckConstraint("status IN ('pending', 'sent', 'failed', 'blocked')", name="status"),
        Index(
            "ix_outbox_messages_due",
            "not_before",
            "id",
            postgresql_where=text("status = 'pending'"),
        ),
        # A chat's next message is the earliest pending one: found per chat when claiming.
        Index(
            "ix_outbox_messages_pending_chat",
            "chat_id",
            "id",
            postgresql_where=text("status = 'pending'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    chat_id: Mapped[int] = mapped_column(BigInteger)
    method: Mapped[str] = mapped_column(String(32), server_default="sendMessage")
    # The Bot API parameters except chat_id (reply_markup as a dict).
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    # Chosen by the caller so that e.g. a nudge is enqueued at most once, ever.
    dedup_key: Mapped[str | None] = mapped_column(Text, unique=True)
    # Not sent before this; while a worker holds the row it is also the end of its lease.
    not_before: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    # Delivery attempts started (a claim counts as one).
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    telegram_message_id: Mapped[int | None] = mapped_column(BigInteger)


class OutboxChat(Base):
    """When a chat may get its next outbox message: written with the outcome of each send and
    read when claiming, so that every delivery worker sharing the database keeps the spacing."""

    __tablename__ = "outbox_chats"

    chat_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    next_send_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


_OPEN_REQUEST = text("status IN ('new', 'acknowledged', 'answered', 'forwarded')")


class Request(Base):
    """A villager's request to the officer of their village (群众诉求).

    The history (request_events) is the record; `status`, `department`, `rating` and `due_at`
    are derived from it by storage.requests at every event, so that inboxes and the scheduler
    can find and sort requests with an index. The villager's account is never shown to the
    officer; `anonymous` also hides their name.
    """

    __tablename__ = "requests"
    __table_args__ = (
        CheckConstraint(_one_of("category", RequestCategory), name="category"),
        CheckConstraint(_one_of("status", RequestStatus), name="status"),
        # Routed to an officer, or to a supervisor when the village has no officer.
        CheckConstraint("num_nonnulls(officer_id, supervisor_id) = 1", name="one_handler"),
        CheckConstraint("rating BETWEEN 1 AND 5", name="rating"),
        Index("ix_requests_officer_open", "officer_id", "due_at", postgresql_where=_OPEN_REQUEST),
        Index(
            "ix_requests_supervisor_open", "supervisor_id", "due_at", postgresql_where=_OPEN_REQUEST
        ),
        Index("ix_requests_village_open", "village_id", postgresql_where=_OPEN_REQUEST),
        Index("ix_requests_due", "due_at", postgresql_where=_OPEN_REQUEST),
        Index("ix_requests_villager", "villager_id", "id"),
        Index("ix_requests_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    draft_id: Mapped[str] = mapped_column(String(32), unique=True)
    villager_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    village_id: Mapped[int] = mapped_column(ForeignKey("villages.id"))
    officer_id: Mapped[int | None] = mapped_column(ForeignKey("officers.id"))
    supervisor_id: Mapped[int | None] = mapped_column(ForeignKey("supervisors.id"))
    category: Mapped[str] = mapped_column(String(16))
    body: Mapped[str] = mapped_column(Text)
    latitude: Mapped[float | None] = mapped_column(Double)
    longitude: Mapped[float | None] = mapped_column(Double)
    anonymous: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    status: Mapped[str] = mapped_column(String(16), server_default=RequestStatus.NEW.value)
    # The department it was last forwarded to.
    department: Mapped[str | None] = mapped_column(String(64))
    rating: Mapped[int | None] = mapped_column(SmallInteger)
    # The pending deadline that falls due first, and which clock it is (None: none pending).
    due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    due_clock: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class RequestEvent(Base):
    """One line of a request's history: who did what, when; messages carry their text and
    photos (Telegram file ids), which is what is relayed to the other side."""

    __tablename__ = "request_events"
    __table_args__ = (
        CheckConstraint(_one_of("event", Event), name="event"),
        CheckConstraint(_one_of("actor", Actor), name="actor"),
        CheckConstraint("rating BETWEEN 1 AND 5", name="rating"),
        Index("ix_request_events_request", "request_id", "id"),
        # An officer's resolutions, for the points of a scope (scores.month_tallies).
        Index(
            "ix_request_events_officer_resolved",
            "officer_id",
            "at",
            postgresql_where=text("event = 'resolved'"),
        ),
        # A villager's recent messages, for the per-minute limit.
        Index(
            "ix_request_events_villager_recent",
            "user_id",
            "at",
            postgresql_where=text("event IN ('created', 'villager_message')"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("requests.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    event: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(16))
    # The Telegram account that caused it (NULL for the system); never shown to the other side.
    user_id: Mapped[int | None] = mapped_column(BigInteger)
    # The officer or supervisor who acted; for `reassigned`, the new handler.
    officer_id: Mapped[int | None] = mapped_column(ForeignKey("officers.id"))
    supervisor_id: Mapped[int | None] = mapped_column(ForeignKey("supervisors.id"))
    body: Mapped[str | None] = mapped_column(Text)
    # [[file_id, file_unique_id], ...]
    photos: Mapped[list[list[str]]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    department: Mapped[str | None] = mapped_column(String(64))
    rating: Mapped[int | None] = mapped_column(SmallInteger)


class MonthStanding(Base):
    """An officer's points and ranks in a month as of `refreshed_at`, written by the
    standings-refresh job (storage.standings) so that a rank costs a row, not the county's
    points. The points stay traceable: they are the sum of scores.month_items at that time."""

    __tablename__ = "month_standings"

    month: Mapped[date] = mapped_column(Date, primary_key=True)  # its first day
    officer_id: Mapped[int] = mapped_column(
        ForeignKey("officers.id", ondelete="CASCADE"), primary_key=True
    )
    station_id: Mapped[int] = mapped_column(ForeignKey("stations.id", ondelete="CASCADE"))
    points: Mapped[int] = mapped_column(Integer)
    station_rank: Mapped[int] = mapped_column(Integer)
    station_size: Mapped[int] = mapped_column(Integer)
    county_rank: Mapped[int] = mapped_column(Integer)
    county_size: Mapped[int] = mapped_column(Integer)
    refreshed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class MonthTally(Base):
    """An officer's month in a village as the quota counts it, from the visit reports and
    their activity lines: kept up to date by triggers on both tables (migration 0012), which
    recompute a row from its reports whenever one of them, or an activity line the quota
    counts, is inserted, changed or deleted. No row when the month has no report."""

    __tablename__ = "month_tallies"

    month: Mapped[date] = mapped_column(Date, primary_key=True)  # its first day
    officer_id: Mapped[int] = mapped_column(
        ForeignKey("officers.id", ondelete="CASCADE"), primary_key=True
    )
    village_id: Mapped[int] = mapped_column(
        ForeignKey("villages.id", ondelete="CASCADE"), primary_key=True
    )
    visit_days: Mapped[int] = mapped_column(Integer)  # distinct visit dates
    households: Mapped[int] = mapped_column(Integer)
    patrols: Mapped[int] = mapped_column(Integer)
    problems_solved: Mapped[int] = mapped_column(Integer)


class JobRun(Base):
    """A scheduled job's run for one slot (the time its trigger fired for). A slot runs at
    most once, whichever process gets there first, and a slot missed while everything was
    down is found here to be missing."""

    __tablename__ = "job_runs"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    slot: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # What the run did, in a line ("12 nudges queued"), or why it failed.
    outcome: Mapped[str | None] = mapped_column(Text)
    failed: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))


class SpotCheck(Base):
    """A visit report drawn for a supervisor's weekly spot check, and the verdict."""

    __tablename__ = "spot_checks"
    __table_args__ = (
        UniqueConstraint("supervisor_id", "visit_report_id"),
        CheckConstraint("status IN ('pending', 'verified', 'flagged')", name="status"),
        Index("ix_spot_checks_supervisor_week", "supervisor_id", "week"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    supervisor_id: Mapped[int] = mapped_column(ForeignKey("supervisors.id", ondelete="CASCADE"))
    visit_report_id: Mapped[int] = mapped_column(
        ForeignKey("visit_reports.id", ondelete="CASCADE"), index=True
    )
    week: Mapped[date] = mapped_column(Date)  # the Monday of the week it was drawn for
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    comment: Mapped[str | None] = mapped_column(Text)
    decided_by: Mapped[int | None] = mapped_column(BigInteger)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class BotMeta(Base):
    """Small facts learnt at run time, e.g. the bot's username for printed links."""

    __tablename__ = "bot_meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
