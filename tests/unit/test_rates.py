"""Token bucket, rate meter and human byte quantities, all on a fake clock."""

from __future__ import annotations

import heapq

import pytest

from common.rates import RateMeter, TokenBucket, format_bytes, format_rate, parse_rate, parse_size

MiB = 1024 * 1024


# --- TokenBucket -----------------------------------------------------------------------------

def test_unlimited_never_waits():
    bucket = TokenBucket(None)
    assert bucket.rate is None
    assert all(bucket.reserve(10 * MiB, now=0.0) == 0.0 for _ in range(100))


def test_starts_empty_so_the_first_reservation_waits():
    bucket = TokenBucket(1000)
    assert bucket.reserve(1000, now=5.0) == pytest.approx(1.0)
    assert bucket.reserve(500, now=5.0) == pytest.approx(1.5)   # queued behind the first


def _simulate(bucket: TokenBucket, senders: int, block: int, duration: float) -> list[int]:
    """Senders that each sleep exactly the delay they are given; bytes sent per sender by `duration`."""
    sent = [0] * senders
    ready = [(0.0, s) for s in range(senders)]      # (time the sender wants to send, sender)
    while ready:
        now, s = heapq.heappop(ready)
        send_at = now + bucket.reserve(block, now)
        if send_at > duration:
            continue                                  # would send after the measurement ends
        sent[s] += block
        heapq.heappush(ready, (send_at, s))
    return sent


def test_long_run_rate_is_exact_for_one_sender():
    rate = 2 * MiB
    sent = _simulate(TokenBucket(rate), senders=1, block=16384, duration=3.0)
    assert sum(sent) == 3 * rate                     # 384 blocks, the last exactly at t = 3 s


def test_shared_cap_holds_across_many_senders():
    rate = 4 * MiB
    sent = _simulate(TokenBucket(rate), senders=7, block=16384, duration=3.0)
    assert abs(sum(sent) - 3 * rate) <= 7 * 16384     # within one block per sender
    assert abs(sum(sent) / (3 * rate) - 1) < 0.01
    assert max(sent) - min(sent) <= 2 * 16384         # and they queue fairly


def test_uneven_block_sizes_still_average_to_the_rate():
    bucket = TokenBucket(100_000)
    now, sent = 0.0, 0
    sizes = [1, 16384, 700, 5000, 131072, 3]
    for i in range(2000):
        n = sizes[i % len(sizes)]
        now += bucket.reserve(n, now)
        sent += n
    assert sent / now == pytest.approx(100_000, rel=1e-9)


def test_idle_time_earns_at_most_the_burst():
    bucket = TokenBucket(1000, burst=500)
    bucket.reserve(1000, now=0.0)                     # debt paid off by t = 1
    assert bucket.reserve(400, now=100.0) == 0.0      # 99 s idle, but only 500 saved
    assert bucket.reserve(100, now=100.0) == 0.0
    assert bucket.reserve(100, now=100.0) == pytest.approx(0.1)


def test_default_burst_is_a_tenth_of_a_second():
    bucket = TokenBucket(10_000)
    bucket.reserve(1, now=0.0)
    assert bucket.reserve(1000, now=60.0) == 0.0
    assert bucket.reserve(10, now=60.0) == pytest.approx(0.001)


def test_clock_going_backwards_creates_no_tokens():
    bucket = TokenBucket(1000, burst=0)
    assert bucket.reserve(1000, now=10.0) == pytest.approx(1.0)
    assert bucket.reserve(1000, now=9.0) == pytest.approx(2.0)


def test_set_rate_at_run_time():
    bucket = TokenBucket(1000)
    assert bucket.reserve(1000, now=0.0) == pytest.approx(1.0)
    bucket.set_rate(None)
    assert bucket.rate is None and bucket.reserve(10**9, now=0.0) == 0.0
    bucket.set_rate(2000, burst=0)
    assert bucket.rate == 2000
    assert bucket.reserve(2000, now=100.0) == pytest.approx(1.0)


@pytest.mark.parametrize("rate,burst", [(-1, None), (float("inf"), None), (float("nan"), None),
                                        (1000, -5)])
def test_bad_settings_are_refused(rate, burst):
    with pytest.raises(ValueError, match="must be a finite number"):
        TokenBucket(rate, burst)


# --- RateMeter -------------------------------------------------------------------------------

def _steady(meter: RateMeter, per_tick: int, start: float, stop: float, ticks: int = 10) -> None:
    """`per_tick` bytes `ticks` times a second over [start, stop)."""
    for i in range(round(start * ticks), round(stop * ticks)):
        meter.add(per_tick, now=i / ticks)


def test_meter_reads_a_steady_flow_exactly():
    meter = RateMeter()
    _steady(meter, 100, 0.0, 30.0)                   # 1000 B/s for 30 s
    assert meter.rate(now=30.0) == pytest.approx(1000)
    assert meter.total == 30_000


def test_meter_ramps_up_without_waiting_for_a_full_window():
    meter = RateMeter(window=10)
    _steady(meter, 100, 0.0, 2.5)
    assert meter.rate(now=2.5) == pytest.approx(1000)


def test_meter_decays_after_the_flow_stops():
    meter = RateMeter(window=10)
    _steady(meter, 100, 0.0, 30.0)
    # at t=35 the window holds whole buckets 26..29 (4000 bytes) spread over 9 s
    assert meter.rate(now=35.0) == pytest.approx(4000 / 9)
    assert meter.rate(now=45.0) == 0.0
    assert meter.total == 30_000


def test_meter_follows_a_rate_change():
    meter = RateMeter(window=5)
    _steady(meter, 100, 0.0, 20.0)                   # 1000 B/s
    assert meter.rate(now=20.0) == pytest.approx(1000)
    _steady(meter, 500, 20.0, 22.0)                  # then 5000 B/s
    # the window is buckets 18..22, bucket 22 not yet begun: 2 s at 1000 and 2 s at 5000
    assert meter.rate(now=22.0) == pytest.approx((2 * 1000 + 2 * 5000) / 4)
    _steady(meter, 500, 22.0, 40.0)
    assert meter.rate(now=40.0) == pytest.approx(5000)


def test_meter_with_no_data_and_first_sample():
    meter = RateMeter()
    assert meter.rate(now=100.0) == 0.0
    meter.add(300, now=100.0)
    assert meter.rate(now=100.0) == pytest.approx(300)   # divided by the 1 s floor, not by 0


def test_early_rate_reads_true_in_the_first_second_then_steps_aside():
    meter = RateMeter()
    assert meter.early_rate(now=0.0) == 0.0
    _steady(meter, 10, 10.0, 10.25, ticks=100)       # 1000 B/s for a quarter second
    assert meter.rate(now=10.25) == pytest.approx(250)          # the 1 s floor: reads low
    assert meter.early_rate(now=10.25) == pytest.approx(1000)
    assert meter.early_rate(now=12.5) == 0.0          # past two resolutions: `rate` is right


def test_a_flow_back_after_a_window_of_silence_reads_its_speed_early():
    meter = RateMeter(window=10)
    _steady(meter, 100, 0.0, 10.0)                   # 1000 B/s for 10 s
    _steady(meter, 400, 30.0, 30.5)                  # silent 20 s, then 4000 B/s
    assert meter.age(now=30.5) == pytest.approx(0.5)
    assert meter.early_rate(now=30.5) == pytest.approx(4000)   # what a pipeline is sized by
    assert meter.rate(now=30.5) == pytest.approx(2000 / 9.5)   # still the window's average
    _steady(meter, 400, 30.5, 33.0)
    assert meter.early_rate(now=33.0) == pytest.approx(4000)   # until the window has only it
    assert meter.rate(now=33.0) == pytest.approx(12_000 / 9)
    _steady(meter, 400, 33.0, 41.0)
    assert meter.early_rate(now=41.0) == 0.0
    assert meter.rate(now=41.0) == pytest.approx(4000)
    assert meter.total == 10_000 + 44_000


def test_a_flow_returns_after_a_window_of_seconds_not_of_buckets():
    # 9.5 -> 19.25 is ten buckets apart but 9.75 s: the same flow; 9.5 -> 19.5 is a return
    for gap, returned in ((9.75, False), (10.0, True)):
        meter = RateMeter(window=10)
        meter.add(100, now=9.5)
        meter.add(100, now=9.5 + gap)
        assert meter.age(now=9.5 + gap) == (0.0 if returned else gap)


def test_a_clock_step_back_is_not_taken_for_a_return():
    meter = RateMeter(window=10)
    meter.add(100, now=100.0)
    meter.add(100, now=50.0)
    meter.add(100, now=60.0)
    assert meter.age(now=101.0) == 1.0


def test_a_pause_shorter_than_the_window_still_counts_the_time_before_it():
    meter = RateMeter(window=10)
    _steady(meter, 100, 0.0, 10.0)
    _steady(meter, 100, 15.0, 16.0)                  # a 5 s pause
    assert meter.age(now=16.0) == pytest.approx(16.0)
    assert meter.early_rate(now=16.0) == 0.0
    # the window is buckets 7..16 (16 just begun): 7, 8, 9 and 15 hold 1000 bytes each
    assert meter.rate(now=16.0) == pytest.approx((3 * 1000 + 1000) / 9)


def test_meter_fine_resolution():
    meter = RateMeter(window=2, resolution=0.25)
    _steady(meter, 5, 0.0, 10.0, ticks=20)           # 100 B/s
    assert meter.rate(now=10.0) == pytest.approx(100)
    assert meter.rate(now=13.0) == 0.0
    with pytest.raises(ValueError):
        RateMeter(window=1, resolution=2)


# --- parse_rate / format -------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("1000", 1000), ("0", 0), ("2MiB", 2 * MiB), ("500KiB", 512_000), ("1.5MB", 1_500_000),
    ("100k", 100_000), ("100K", 100_000), ("100kB", 100_000), ("2 MiB/s", 2 * MiB),
    ("1.5 mib", 1_572_864), ("1G", 10**9), ("1GiB", 1 << 30), (".5k", 500), ("7B", 7),
    ("  3Ki ", 3072), ("1.5M/s", 1_500_000), ("2.", 2),
])
def test_parse_rate(text, expected):
    assert parse_rate(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "-1", "1.5.2", "10 parsecs", "1e6", "inf", "nan",
                                  "2MiB/h", "MiB", "1,000", "1 2"])
def test_parse_rate_rejects(text):
    with pytest.raises(ValueError, match=f"invalid rate {text!r}.*e.g. '2MiB'"):
        parse_rate(text)


def test_parse_size_takes_units_but_not_a_per_second():
    assert [parse_size(t) for t in ("256KiB", "1GiB", "32768", "1.5 MB")] == [
        256 * 1024, 1 << 30, 32768, 1_500_000]
    for bad in ("2MiB/s", "", "-4k", "12q"):
        with pytest.raises(ValueError, match=f"invalid size {bad!r}.*e.g. '256KiB'"):
            parse_size(bad)


@pytest.mark.parametrize("n,expected", [
    (0, "0 B"), (512, "512 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"),
    (12.3 * MiB, "12.3 MiB"), (MiB - 1, "1.0 MiB"), (5 * 1024 * MiB, "5.0 GiB"),
    (3 * 1024**4, "3.0 TiB"), (5 * 1024**6, "5120.0 PiB"), (-2048, "-2.0 KiB"),
    (1023.7, "1.0 KiB"),
])
def test_format_bytes(n, expected):
    assert format_bytes(n) == expected


def test_format_rate():
    assert format_rate(4 * MiB) == "4.0 MiB/s"
    assert format_rate(0) == "0 B/s"
    assert format_rate(parse_rate("500KiB")) == "500.0 KiB/s"
