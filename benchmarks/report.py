"""The report of a run: rows of figures, the bars they are held to, a markdown table."""

from __future__ import annotations

from dataclasses import dataclass, field

# The bars of issues 8, 11, 12 and 14, as ratios measured in the same run.
APPEND_BAR = 1.2  # x GET (issue 14; was 1.75)
GROWTH_BAR = 1.1  # append at message 10,000 over append at message 10
READ_BAR = 1.5  # x GET, the last 20 (issue 14; was 2.2)
ASYNC_APPEND_BAR = 1.3  # x a redis.asyncio GET on the same loop
ASYNC_READ_BAR = 1.6  # x a redis.asyncio GET
CONCURRENT_BAR = 0.6  # 100 tasks appending, x the rate of 100 tasks GETting
LIFECYCLE_BAR = 1.5  # x GET, each message operation at message 10 and 5,000
CONTEXT_BAR = 2.0  # x GET, get_context picking 20 of 5,000 messages
FULL_LISTING_BAR = 2.0  # x a bare SCAN COUNT 1000 of the sessions' meta keys
REPORT_SECONDS_BAR = 20.0  # conversations_report over a million sessions, wall
REPORT_RSS_BAR = 100.0  # MB, its peak resident memory
LISTING_BAR = 1.2  # at 100,000 sessions over at 1,000
CYCLE_SEED_BAR = 2.0  # x the seed's cycles/s
CYCLE_RATE_BAR = 700.0  # cycles/s, one client
HTTP_BAR = 2.0  # x the bare DRF endpoint, same method


@dataclass
class Row:
    figure: str
    app: str
    app_ratio: str = ""
    seed: str = ""
    seed_ratio: str = ""
    bar: str = ""
    holds: bool | None = None


@dataclass
class Report:
    prefix: str = ""  # the run's Redis key prefix (deleted at the end of the run)
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)

    @property
    def bars(self) -> list[Row]:
        return [row for row in self.rows if row.holds is not None]

    def markdown(self) -> str:
        lines = [
            "| figure | this app | x reference | seed baseline | x reference | bar | holds |",
            "| --- | ---: | ---: | ---: | ---: | --- | --- |",
        ]
        for r in self.rows:
            verdict = "" if r.holds is None else ("**yes**" if r.holds else "**NO**")
            lines.append(
                f"| {r.figure} | {r.app} | {r.app_ratio} | {r.seed} | {r.seed_ratio} | {r.bar} | {verdict} |"
            )
        held = sum(1 for r in self.bars if r.holds)
        return "\n".join(
            [*lines, "", f"Bars held: {held} of {len(self.bars)}.", "", *(f"- {n}" for n in self.notes)]
        )


def us(value: float) -> str:
    return f"{value:,.0f} µs" if value >= 100 else f"{value:.1f} µs"


def ms_or_us(value_us: float) -> str:
    return f"{value_us / 1000:,.1f} ms" if value_us >= 10_000 else us(value_us)


def x(value: float, unit: str = "GET") -> str:
    return f"{value:.2f} x {unit}"
