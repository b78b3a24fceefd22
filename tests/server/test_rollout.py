"""Campaign arithmetic: waves partition the devices; thresholds decide; windows wrap midnight."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from omadm.server.rollout import Decision, Tally, Window, decide, parse_wave, should_retry, split_waves

wave_specs = st.lists(
    st.one_of(st.integers(1, 50), st.integers(1, 100).map(lambda p: f"{p}%")), min_size=0, max_size=6
)


@given(st.lists(st.integers(), unique=True, max_size=200), wave_specs)
def test_waves_partition_the_devices_in_order(devices: list[int], waves: list[int | str]) -> None:
    split = split_waves(devices, waves)
    assert [d for wave in split for d in wave] == devices  # each exactly once, order kept
    assert all(split)  # no empty wave
    assert len(split) <= max(1, len(waves))


@given(st.integers(1, 500), st.integers(1, 100))
def test_a_percentage_wave_is_rounded_up_and_never_empty(total: int, percent: int) -> None:
    first = split_waves(list(range(total)), [f"{percent}%", "100%"])[0]
    assert len(first) == min(total, -(-total * percent // 100))


def test_waves_by_count_and_percentage() -> None:
    devices = list(range(100))
    assert [len(w) for w in split_waves(devices, [5, "20%", "100%"])] == [5, 20, 75]
    assert [len(w) for w in split_waves(devices, [10, 10])] == [10, 90]  # the last takes the rest
    assert [len(w) for w in split_waves(devices[:3], [5, 5])] == [3]
    assert [len(w) for w in split_waves(devices, [])] == [100]
    assert split_waves([], [5]) == []


@pytest.mark.parametrize("bad", [0, -1, "0%", "101%", "x", "", True, 2.5])
def test_bad_wave_specs_are_named(bad: object) -> None:
    with pytest.raises(ValueError, match="wave"):
        parse_wave(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("tally", "last", "expected"),
    [
        (Tally(10, succeeded=3), False, Decision.WAIT),
        (Tally(10, succeeded=8), False, Decision.NEXT_WAVE),  # 80 % reached: do not wait for the rest
        (Tally(10, succeeded=8), True, Decision.FINISH),
        (Tally(10, succeeded=7, failed=3), False, Decision.STOP),  # 30 % failed > 20 %
        (Tally(10, succeeded=6, failed=2), False, Decision.WAIT),  # 2 still running
        (
            Tally(
                10,
                succeeded=7,
                failed=2,
            ),
            False,
            Decision.WAIT,
        ),
        (Tally(4, succeeded=3, failed=0), False, Decision.WAIT),
        (Tally(0), False, Decision.NEXT_WAVE),
    ],
)
def test_thresholds_decide(tally: Tally, last: bool, expected: Decision) -> None:
    assert decide(tally, success_threshold=0.8, error_threshold=0.2, last_wave=last) is expected


def test_a_wave_that_ends_below_its_success_threshold_pauses() -> None:
    assert decide(
        Tally(10, succeeded=7, failed=1), success_threshold=0.8, error_threshold=0.5, last_wave=False
    ) is (Decision.WAIT)
    done = Tally(10, succeeded=7, failed=3)
    assert decide(done, success_threshold=0.8, error_threshold=0.5, last_wave=False) is Decision.PAUSE


@given(
    st.integers(1, 60)
    .flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n)))
    .flatmap(lambda t: st.tuples(st.just(t[0]), st.just(t[1]), st.integers(0, t[0] - t[1]))),
    st.floats(0, 1),
    st.floats(0, 1),
)
def test_decisions_are_consistent(sizes: tuple[int, int, int], success: float, error: float) -> None:
    size, succeeded, failed = sizes
    decision = decide(
        Tally(size, succeeded, failed), success_threshold=success, error_threshold=error, last_wave=False
    )
    if failed / size > error:
        assert decision is Decision.STOP
    elif succeeded / size >= success:
        assert decision is Decision.NEXT_WAVE
    else:
        assert decision is (Decision.PAUSE if succeeded + failed == size else Decision.WAIT)


def test_impossible_tallies_and_thresholds_are_refused() -> None:
    with pytest.raises(ValueError, match="impossible"):
        Tally(2, succeeded=2, failed=1)
    with pytest.raises(ValueError, match="fractions"):
        decide(Tally(1), success_threshold=80, error_threshold=0.2, last_wave=False)


def test_only_transient_failures_are_retried() -> None:
    assert should_retry(1501, attempts=1, max_retries=2)
    assert should_retry(None, attempts=2, max_retries=2)  # no report came: try again
    assert not should_retry(1501, attempts=3, max_retries=2)
    assert not should_retry(1407, attempts=1, max_retries=5)  # the package is bad: it stays bad
    assert not should_retry(1401, attempts=1, max_retries=5)  # the user said no


def test_maintenance_windows_in_utc_and_across_midnight() -> None:
    night = Window.parse("22:00-04:00")
    day = datetime(2026, 11, 25, tzinfo=UTC)
    assert night.contains(day.replace(hour=23))
    assert night.contains(day.replace(hour=3, minute=59))
    assert not night.contains(day.replace(hour=4))
    assert not night.contains(day.replace(hour=12))
    paris = timezone(timedelta(hours=1))
    assert night.contains(datetime(2026, 11, 25, 23, 30, tzinfo=paris))  # 22:30 UTC
    office = Window.parse("09:00-17:00")
    assert office.contains(day.replace(hour=9)) and not office.contains(day.replace(hour=17))
    for bad in ("9-17", "25:00-01:00", "10:00-10:00"):
        with pytest.raises(ValueError):
            Window.parse(bad)
    with pytest.raises(ValueError, match="aware"):
        office.contains(datetime(2026, 1, 1, 10))
