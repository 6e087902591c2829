"""Cron schedules: the standard 5-field expression (minute hour day-of-month month
day-of-week) read in an IANA timezone, UTC by default.

Parsing and stepping are `cronsim`'s, which reads expressions as Debian's cron does
(day-of-month and day-of-week are OR-ed unless one starts with ``*``; ``L``, ``#`` and
names like ``MON`` work) and steps through daylight-saving changes the same way: a time
that does not exist that day fires at the first minute after the gap, a time that occurs
twice fires once. The ``@hourly``-style shorthands are accepted too. Times are epoch
milliseconds throughout, like every other timestamp Interlock stores.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from core.errors import InvalidInput

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

DEFAULT_TIMEZONE = "UTC"


def zone(name: str | None) -> ZoneInfo:
    """The IANA timezone ``name`` (UTC for None); InvalidInput when there is none such."""
    name = DEFAULT_TIMEZONE if name is None else name
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a path
        raise InvalidInput(
            f"timezone '{name}' is not an IANA timezone name; use one such as 'UTC' or 'Europe/Paris'"
        ) from None


@dataclass(frozen=True)
class Schedule:
    """A validated cron expression in a timezone."""

    expression: str
    tz: ZoneInfo

    @classmethod
    def parse(cls, expression: str, timezone: str | None = None) -> Schedule:
        """Raises InvalidInput (with the reason) for anything but a valid 5-field
        expression in a known timezone."""
        tz = zone(timezone)
        text = ALIASES.get(expression.strip().lower(), expression.strip())
        fields = len(text.split())
        if fields != 5:
            raise InvalidInput(
                f"schedule '{expression}' has {fields} field(s); a cron schedule has 5: "
                "minute hour day-of-month month day-of-week (e.g. '*/15 * * * *')"
            )
        try:
            next(CronSim(text, datetime(2000, 1, 1, tzinfo=tz)))
        except (CronSimError, StopIteration) as e:
            raise InvalidInput(
                f"schedule '{expression}' is not a valid cron expression: {e or 'it never fires'} "
                "(5 fields: minute hour day-of-month month day-of-week, e.g. '0 9 * * MON-FRI')"
            ) from None
        return cls(text, tz)

    def _at(self, ms: int) -> datetime:
        return datetime.fromtimestamp(ms / 1000, self.tz)

    def next_after(self, ms: int) -> int:
        """The first fire time strictly after ``ms``."""
        return _ms(next(CronSim(self.expression, self._at(ms))))

    def latest_at_or_before(self, ms: int) -> int:
        """The last fire time at or before ``ms``."""
        # cronsim steps back from the start's whole second when it has a fraction, else from
        # the second before: one microsecond more makes "at" count in both cases.
        start = self._at(ms) + timedelta(microseconds=1)
        return _ms(next(CronSim(self.expression, start, reverse=True)))


def _ms(moment: datetime) -> int:
    return int(moment.timestamp()) * 1000
