"""DEEP R on sparse layers (SCIENCE.md seed B): the rule, its random numbers and its storage, as one PE keeps them.

A layer of n_pre x n_post potential connections keeps exactly K active ones between rewirings. Connection k
has a fixed sign s_k and a parameter theta_k > 0; its weight is w_k = s_k theta_k. Per training sample:

    theta_k <- theta_k - lr * dE/dtheta_k - lr * l1 + lr * noise * nu_k,     nu_k ~ N(0, 1)

(dE/dtheta_k = s_k * pre_row * delta_col). A connection whose theta drops to <= 0 is dormant and leaves storage
at once; every `rewire_every` samples exactly K - active dormant connections, drawn uniformly from all dormant
positions of the layer, are activated with theta = 0 and a fresh random sign.

Storage is what the chip keeps: per active connection a uint16 row, a uint16 column and a float32 theta, with the
sign bits packed 8 to a byte, all in the SRAM ledger. Connections are kept sorted by (column, row).

Split invariance (the same bits on 1 or N PEs, each holding a column slice): every random number comes from a
counter-based hash of (seed, layer, sample, position) rather than from a PRNG stream, so it does not depend on
which PE draws it; sums run strictly in storage order (np.add.at is sequential), i.e. over rows ascending for a
column and over columns ascending for a row, the order a chain of PEs holding ascending column slices keeps.
"""

from __future__ import annotations

import numpy as np

from s2emu.errors import S2EmuError

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)

# Streams of the hash generator (one per use, so no two uses share numbers).
INIT, SIGN, NOISE, DRAW = 1, 2, 3, 4


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer, vectorised over uint64 (wraps modulo 2^64)."""
    z = (np.asarray(x, np.uint64) + _GOLDEN) & _M64
    z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _M64
    z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _M64
    return z ^ (z >> np.uint64(31))


def hash_bits(seed: int, stream: int, layer: int, counter: int, ids) -> np.ndarray:
    """64 random bits per id, a pure function of (seed, stream, layer, counter, id)."""
    with np.errstate(over="ignore"):
        h = splitmix64(np.uint64(seed) * np.uint64(0x100000001B3) + np.uint64(stream))
        h = splitmix64(h ^ np.uint64(layer * 0x9E37 + 1))
        h = splitmix64(h ^ np.uint64(counter))
        return splitmix64(h ^ np.asarray(ids, np.uint64))


def hash_uniform(seed, stream, layer, counter, ids) -> np.ndarray:
    """float64 in (0, 1), 53 random bits."""
    return ((hash_bits(seed, stream, layer, counter, ids) >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53


def hash_normal(seed, stream, layer, counter, ids) -> np.ndarray:
    """float32 N(0, 1) by Box-Muller from two hashed uniforms per id."""
    ids = np.asarray(ids, np.uint64)
    u1 = hash_uniform(seed, stream, layer, counter, ids * np.uint64(2))
    u2 = hash_uniform(seed, stream, layer, counter, ids * np.uint64(2) + np.uint64(1))
    return (np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)).astype(np.float32)


def budget(n_pre: int, n_post: int, connectivity: float) -> int:
    """K, the active connections a layer keeps: round(connectivity * n_pre * n_post), at least 1."""
    return max(1, int(round(connectivity * n_pre * n_post)))


class SparseLayer:
    """The active connections of one layer's column slice [lo, hi), allocated in a PE's SRAM ledger.

    capacity: the most connections this slice can hold (K for a PE holding the whole layer)."""

    def __init__(self, ledger, name: str, n_pre: int, n_post: int, lo: int, hi: int, capacity: int,
                 layer: int, seed: int):
        if n_pre > 1 << 16 or n_post > 1 << 16:
            raise S2EmuError(f"{name}: DEEP R stores rows and columns as uint16; {n_pre} x {n_post} is too large")
        self.name, self.n_pre, self.n_post, self.lo, self.hi = name, n_pre, n_post, lo, hi
        self.layer, self.seed, self.capacity = layer, seed, capacity
        self.rows = ledger.alloc(f"{name}.rows", (capacity,), np.uint16, batched=False)
        self.cols = ledger.alloc(f"{name}.cols", (capacity,), np.uint16, batched=False)
        self.theta = ledger.alloc(f"{name}.theta", (capacity,), np.float32, batched=False)
        self.signs = ledger.alloc(f"{name}.signs", ((capacity + 7) // 8,), np.uint8, batched=False)
        self.n = 0  # active connections, stored in [0, n)

    # ------------------------------------------------------------ views of the active connections

    def sign(self) -> np.ndarray:
        """+1/-1 float32 per active connection, from the packed bits (1 = negative)."""
        bits = np.unpackbits(self.signs, count=self.n, bitorder="little")
        return (1.0 - 2.0 * bits).astype(np.float32)

    def weights(self) -> np.ndarray:
        return self.sign() * self.theta[:self.n]

    def dense(self) -> np.ndarray:
        """The slice as a dense [n_pre, hi - lo] float32 matrix (for reports and the saved model)."""
        w = np.zeros((self.n_pre, self.hi - self.lo), np.float32)
        w[self.rows[:self.n], self.cols[:self.n].astype(np.int64) - self.lo] = self.weights()
        return w

    def positions(self) -> np.ndarray:
        """Global position row * n_post + col of each active connection (the hash id of its noise)."""
        return self.rows[:self.n].astype(np.int64) * self.n_post + self.cols[:self.n]

    # ------------------------------------------------------------ the network's arithmetic

    def forward(self, pre: np.ndarray) -> np.ndarray:
        """Input to each post neuron of the slice: sum over rows ascending of w * pre[row] (float32)."""
        acc = np.zeros(self.hi - self.lo, np.float32)
        n = self.n
        np.add.at(acc, self.cols[:n].astype(np.int64) - self.lo, self.weights() * pre[self.rows[:n]])
        return acc

    def backward(self, delta: np.ndarray, acc: np.ndarray) -> None:
        """acc[row] += sum over this slice's columns ascending of w * delta[col]; delta over the slice.
        A PE holding a later column slice continues the same acc (the chain keeps the order)."""
        n = self.n
        cols = self.cols[:n].astype(np.int64) - self.lo
        # storage is sorted by (col, row): a sequential scatter visits each row's columns in ascending order
        np.add.at(acc, self.rows[:n], self.weights() * delta[cols])

    def update(self, pre: np.ndarray, delta: np.ndarray, *, lr: float, l1: float, noise: float,
               sample: int) -> int:
        """One DEEP R step; returns how many connections went dormant (and left storage)."""
        n = self.n
        if n == 0:
            return 0
        th = self.theta[:n]
        grad = self.sign() * pre[self.rows[:n]] * delta[self.cols[:n].astype(np.int64) - self.lo]
        nu = hash_normal(self.seed, NOISE, self.layer, sample, self.positions())
        th -= np.float32(lr) * grad
        th -= np.float32(lr * l1)
        th += np.float32(lr * noise) * nu
        keep = th > 0
        dead = n - int(keep.sum())
        if dead:
            self._keep(keep)
        return dead

    def _keep(self, keep: np.ndarray) -> None:
        n, m = self.n, int(keep.sum())
        bits = np.unpackbits(self.signs, count=n, bitorder="little")[keep]
        for a in (self.rows, self.cols, self.theta):
            a[:m] = a[:n][keep]
        self.signs[:] = 0
        self.signs[:(m + 7) // 8] = np.packbits(bits, bitorder="little")
        self.n = m

    # ------------------------------------------------------------ rewiring

    def active_per_column(self) -> np.ndarray:
        """Active connections per column of the slice (what a PE tells the others before rewiring)."""
        return np.bincount(self.cols[:self.n].astype(np.int64) - self.lo, minlength=self.hi - self.lo)

    def rewire(self, active_per_column: np.ndarray, k_total: int, round_: int, init_scale: float = 0.0) -> None:
        """Activate k_total - active dormant connections of the whole layer, uniformly at random, and add
        the ones that fall in this slice. active_per_column: every column of the layer (all PEs agree on it).

        Draw i picks u uniform in [0, D) over the D dormant positions (ordered by column, then row), from a
        hash of (round, i): the column from the dormant counts every PE knows, the row (the u'-th dormant
        row of that column) by the PE that holds the column. init_scale > 0 (initialisation only): new
        thetas are |N(0, 1)| * init_scale instead of 0."""
        dormant = (self.n_pre - np.asarray(active_per_column, np.int64)).copy()
        n_new = k_total - int(self.n_pre * self.n_post - dormant.sum())
        if n_new <= 0:
            return
        u_all = hash_bits(self.seed, DRAW, self.layer, round_, np.arange(n_new))
        n0 = self.n
        cols_n = self.cols[:n0].astype(np.int64)
        ptr = np.searchsorted(cols_n, np.arange(self.lo, self.hi + 1))
        taken: dict[int, list[int]] = {}
        new_rows, new_cols, new_ids = [], [], []
        for i in range(n_new):
            cum = np.cumsum(dormant)
            u = int(u_all[i] % np.uint64(cum[-1]))
            col = int(np.searchsorted(cum, u, side="right"))
            dormant[col] -= 1
            if not self.lo <= col < self.hi:
                continue  # another PE's column: it adds this connection
            r = u - (int(cum[col - 1]) if col else 0)  # the r-th dormant row of the column
            for a in sorted([*self.rows[ptr[col - self.lo]:ptr[col - self.lo + 1]].tolist(),
                             *taken.get(col, [])]):
                if a <= r:
                    r += 1
                else:
                    break
            taken.setdefault(col, []).append(r)
            new_rows.append(r), new_cols.append(col), new_ids.append(i)
        m = len(new_rows)
        if n0 + m > self.capacity:
            raise S2EmuError(f"{self.name}: {n0 + m} connections exceed this PE's capacity {self.capacity}")
        if not m:
            return
        rows = np.concatenate([self.rows[:n0].astype(np.int64), new_rows])
        cols = np.concatenate([cols_n, new_cols])
        pos = np.asarray(new_rows, np.int64) * self.n_post + np.asarray(new_cols, np.int64)
        sign_bits = (hash_bits(self.seed, SIGN, self.layer, round_, pos) >> np.uint64(63)).astype(np.uint8)
        bits = np.concatenate([np.unpackbits(self.signs, count=n0, bitorder="little"), sign_bits])
        theta0 = (np.abs(hash_normal(self.seed, INIT, self.layer, round_, pos)) * np.float32(init_scale)
                  if init_scale > 0 else np.zeros(m, np.float32))
        theta = np.concatenate([self.theta[:n0], theta0])
        order = np.lexsort((rows, cols))
        n = n0 + m
        self.rows[:n], self.cols[:n], self.theta[:n] = rows[order], cols[order], theta[order]
        self.signs[:] = 0
        self.signs[:(n + 7) // 8] = np.packbits(bits[order], bitorder="little")
        self.n = n
