"""A bounded load test on loopback: 8 concurrent users x 10 generations, no errors, every output as alone."""

from bench.load import run_load


def test_eight_concurrent_users_ten_generations_each(app_url, shipped):
    result = run_load(app_url, shipped, users=8, per_user=10, chars=200)
    print(f"\nload: p50 {result['p50_s']} s, p95 {result['p95_s']} s, {result['requests_per_s']} requests/s")
    assert result["errors"] == []
    assert result["completed"] == 80
    assert result["mismatches"] == []
