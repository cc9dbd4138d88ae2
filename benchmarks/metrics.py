"""Benchmark latentquant.metrics against peers measured in the same process.

    .venv/bin/python benchmarks/metrics.py            # full run (a few minutes on 2 cores)
    .venv/bin/python benchmarks/metrics.py --quick    # smaller DCI agreement study

1. NMI of discrete latents, N=100,000, K=6, L=12: ``infomec(...,
   discrete_latents=True, explicitness=False)`` (the whole call) against a
   loop of ``sklearn.metrics.mutual_info_score`` over the K*L pairs plus K
   entropies. Target: >= 10x faster and < 1 s. Also checks equality.
2. InfoE (K logistic fits plus K null fits), continuous-latent NMI (kNN and
   histogram), MIG and SAP timings.
3. DCI: the default model (GradientBoostingClassifier defaults, as
   disentanglement_lib) against ``model='fast'``: time and agreement of
   D, C and test informativeness on synthetic codes.

Times are medians over repeats (the machine is shared).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
from sklearn.metrics import mutual_info_score

from latentquant.metrics import dci, infomec, mig, sap


def median_time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def loop_nmi(sources, latents):
    """The peer: one mutual_info_score call per pair (as the authors' code)."""
    nmi = np.empty((sources.shape[1], latents.shape[1]))
    for i in range(sources.shape[1]):
        for j in range(latents.shape[1]):
            nmi[i, j] = mutual_info_score(sources[:, i], latents[:, j])
        nmi[i] /= mutual_info_score(sources[:, i], sources[:, i])
    return nmi


def discrete_codes(n, k, l, rng):
    """Sources with 4..15 values; latents: noisy copies, mixtures, noise."""
    sizes = rng.integers(4, 16, k)
    sources = np.stack([rng.integers(0, m, n) for m in sizes], 1)
    latents = np.empty((n, l), dtype=np.int64)
    for j in range(l):
        i = j % k
        if j < k:
            flip = rng.random(n) < 0.1
            latents[:, j] = np.where(flip, rng.integers(0, sizes[i], n), sources[:, i])
        elif j < k + 3:
            latents[:, j] = (sources[:, i] + sources[:, (i + 1) % k]) % 11
        else:
            latents[:, j] = rng.integers(0, 10, n)
    return sources, latents


def section_nmi(rng):
    print("== 1. NMI, discrete latents: N=100,000, K=6, L=12")
    sources, latents = discrete_codes(100_000, 6, 12, rng)
    t_ours, ours = median_time(lambda: infomec(sources, latents, discrete_latents=True, explicitness=False), 7)
    t_loop, ref = median_time(lambda: loop_nmi(sources, latents), 3)
    diff = np.abs(ours.nmi - ref).max()
    ratio = t_loop / t_ours
    print(f"   infomec(discrete_latents=True, explicitness=False): {t_ours * 1e3:8.1f} ms (median of 7)")
    print(f"   loop of mutual_info_score over 72 pairs + 6 H(s):   {t_loop * 1e3:8.1f} ms (median of 3)")
    print(f"   speed-up {ratio:.1f}x; max |NMI difference| = {diff:.1e}")
    ok = ratio >= 10 and t_ours < 1.0 and diff < 1e-9
    print(f"   target >= 10x and < 1 s and equal to 1e-9: {'PASS' if ok else 'FAIL'}")
    return sources, latents


def section_other(rng, sources, latents):
    print("== 2. Other timings")
    for n in (20_000, 100_000):
        s, z = sources[:n], latents[:n]
        t, r = median_time(lambda s=s, z=z: infomec(s, z, discrete_latents=True, explicitness=True), 1)
        print(f"   InfoE included, discrete, N={n:,}, K=6, L=12: {t:7.2f} s (InfoE = {r.infoe:.3f})")
    n = 10_000
    zc = latents[:n] + 0.3 * rng.standard_normal((n, latents.shape[1]))
    s = sources[:n]
    t, r = median_time(lambda: infomec(s, zc, discrete_latents=False, explicitness=False), 3)
    print(f"   NMI continuous, kNN (k=10), N={n:,}: {t:7.2f} s (InfoM {r.infom:.3f})")
    t, r = median_time(lambda: infomec(s, zc, discrete_latents=False, explicitness=False, estimator="histogram"), 3)
    print(f"   NMI continuous, histogram (20 bins), N={n:,}: {t:7.3f} s (InfoM {r.infom:.3f})")
    t, m = median_time(lambda: mig(s, zc), 3)
    print(f"   MIG, N={n:,}: {t:7.3f} s (MIG {m:.3f})")
    t, v = median_time(lambda: sap(s, zc), 1)
    print(f"   SAP, N={n:,} (72 LinearSVC fits): {t:7.2f} s (SAP {v:.3f})")


def dci_cases(n, seed):
    """Synthetic continuous codes of 4 sources with 6 values each."""
    rng = np.random.default_rng(seed)
    s = rng.integers(0, 6, (n, 4))
    u = (s - 2.5) / 1.7
    noise = lambda width, scale=0.1: scale * rng.standard_normal((n, width))  # noqa: E731
    cases = {
        "perfect, permuted": u[:, [2, 0, 3, 1]] + noise(4),
        "perfect + 2 noise": np.concatenate([u + noise(4), rng.standard_normal((n, 2))], 1),
    }
    for angle in (0.3, 0.7):
        c, s_ = np.cos(angle), np.sin(angle)
        rot = np.array([[c, -s_, 0, 0], [s_, c, 0, 0], [0, 0, c, -s_], [0, 0, s_, c]])
        cases[f"rotated {angle}"] = u @ rot.T + noise(4)
    cases["pairs merged"] = np.stack(
        [u[:, 0] * 6 + u[:, 1], u[:, 2] * 6 + u[:, 3], rng.standard_normal(n), rng.standard_normal(n)], 1
    )
    cases["dense mix"] = u @ rng.standard_normal((4, 6)) + noise(6)
    cases["noisy"] = u + noise(4, 0.6)
    cases["random"] = rng.standard_normal((n, 5))
    return s, cases


def section_dci(quick: bool):
    n, seeds = 1500, ((0,) if quick else (0, 1, 2))
    print(
        f"== 3. DCI: model='gbt' (sklearn defaults) vs model='fast'; N={n} "
        f"(1000 train / 500 test), K=4 sources x 6 values, seeds {list(seeds)}"
    )
    worst = {"D": 0.0, "C": 0.0, "I_test": 0.0}
    total = {"gbt": 0.0, "fast": 0.0}
    print(f"   {'case':<20} {'seed':>4}  {'D gbt/fast':>13}  {'C gbt/fast':>13}  {'I_test gbt/fast':>15}")
    for seed in seeds:
        s, cases = dci_cases(n, seed)
        for name, z in cases.items():
            out = {}
            for model in ("gbt", "fast"):

                def run(s=s, z=z, seed=seed, model=model):
                    return dci(s, z, seed=seed, model=model)

                t, out[model] = median_time(run, 1)
                total[model] += t
            a, b = out["gbt"], out["fast"]
            worst["D"] = max(worst["D"], abs(a.disentanglement - b.disentanglement))
            worst["C"] = max(worst["C"], abs(a.completeness - b.completeness))
            worst["I_test"] = max(worst["I_test"], abs(a.informativeness_test - b.informativeness_test))
            print(
                f"   {name:<20} {seed:>4}  {a.disentanglement:.3f}/{b.disentanglement:.3f}  "
                f"{a.completeness:.3f}/{b.completeness:.3f}  "
                f"{a.informativeness_test:.3f}/{b.informativeness_test:.3f}"
            )
    print(
        f"   total time: gbt {total['gbt']:.1f} s, fast {total['fast']:.1f} s "
        f"-> fast is {total['gbt'] / total['fast']:.1f}x faster"
    )
    print(f"   max |gbt - fast|: D {worst['D']:.3f}, C {worst['C']:.3f}, I_test {worst['I_test']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed in the DCI agreement study")
    parser.add_argument("--skip-dci", action="store_true", help="skip the DCI study (the slow part)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    rng = np.random.default_rng(0)
    sources, latents = section_nmi(rng)
    section_other(rng, sources, latents)
    if not args.skip_dci:
        section_dci(args.quick)


if __name__ == "__main__":
    main()
