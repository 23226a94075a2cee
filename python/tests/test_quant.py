"""test_quant.py — the numpy helpers the examples and the reference rely on: e4m3 rounding
against PyTorch-made vectors (tests/data/e4m3_rne_vectors.csv), bf16 rounding, int4 packing
bit layout and the min-max quantiser. (The torch quantiser: with_torch/test_torch_cpu.py.)
"""
import os
import unittest

import _common

np = _common.need_numpy()
import w4a8moe  # noqa: E402
from w4a8moe import quant as Q  # noqa: E402

CSV = os.path.join(_common.REPO, "tests", "data", "e4m3_rne_vectors.csv")


class TestE4M3(unittest.TestCase):
    def test_pytorch_vectors(self):
        if not os.path.exists(CSV):
            self.skipTest(f"{CSV} missing")
        bits, values = [], []
        with open(CSV) as f:
            for line in f:
                if line.startswith("#") or line.startswith("f32_bits"):
                    continue
                b, _, v = line.strip().split(",")
                bits.append(int(b, 16))
                values.append(float(v))
        x = np.array(bits, dtype=np.uint32).view(np.float32)
        got = Q.round_e4m3(x)
        want = np.array(values, dtype=np.float32)
        bad = np.nonzero(got != want)[0]
        self.assertGreater(len(x), 5000)
        self.assertEqual(len(bad), 0, f"{len(bad)} mismatches, first: x={x[bad[:3]]} "
                                      f"got={got[bad[:3]]} want={want[bad[:3]]}")

    def test_saturation_and_nan(self):
        x = np.array([448, 449, 464, 1e9, np.inf, -np.inf, -500, np.nan, 0.0, -0.0, 2.0 ** -10,
                      3 * 2.0 ** -11], dtype=np.float32)
        got = Q.round_e4m3(x)
        self.assertEqual(list(got[:7]), [448, 448, 448, 448, 448, -448, -448])
        self.assertTrue(np.isnan(got[7]))
        self.assertEqual(got[8], 0.0)
        self.assertTrue(np.signbit(got[9]))
        self.assertEqual(got[10], 0.0)          # 2^-10 is halfway to 2^-9: ties to even (0)
        self.assertEqual(got[11], 2.0 ** -9)    # 1.5 * 2^-10 rounds up to 2^-9


class TestBF16(unittest.TestCase):
    def test_round_to_nearest_even(self):
        # 1 + 2^-8 is halfway between bf16 1 and 1 + 2^-7: ties to even → 1
        x = np.array([1 + 2.0 ** -8, 1 + 3 * 2.0 ** -8, 1 + 2.0 ** -8 + 2.0 ** -20, -2.5],
                     dtype=np.float32)
        self.assertEqual(list(Q.round_bf16(x)), [1.0, 1 + 2.0 ** -6, 1 + 2.0 ** -7, -2.5])
        self.assertEqual(int(Q.f32_to_bf16(np.float32(1.0))), 0x3F80)
        self.assertTrue(np.isnan(Q.bf16_to_f32(Q.f32_to_bf16(np.float32(np.nan)))))

    def test_roundtrip(self):
        rng = np.random.default_rng(_common.seed())
        b = rng.integers(0, 0x7F80, 1000, dtype=np.uint16)  # finite positives
        self.assertTrue(np.array_equal(Q.f32_to_bf16(Q.bf16_to_f32(b)), b))


class TestInt4(unittest.TestCase):
    def test_pack_layout(self):
        q = np.array([[-8, -7, 0, 1, 2, 3, 6, 7]], dtype=np.int8)
        word = int(Q.pack_int4(q).view(np.uint32)[0, 0])
        # element i at bits 4*(i%8), stored as q + 8
        self.assertEqual(word, sum(((int(v) + 8) & 0xF) << (4 * i) for i, v in enumerate(q[0])))
        self.assertEqual(word & 0xF, 0)
        self.assertEqual(word >> 28, 15)

    def test_roundtrip(self):
        rng = np.random.default_rng(_common.seed() + 1)
        q = rng.integers(-8, 8, (3, 5, 64), dtype=np.int8)
        self.assertTrue(np.array_equal(Q.unpack_int4(Q.pack_int4(q)), q))
        with self.assertRaises(ValueError):
            Q.pack_int4(np.full((1, 8), 8))

    def test_quantiser(self):
        rng = np.random.default_rng(_common.seed() + 2)
        g = 32
        w = rng.standard_normal((6, 4 * g)).astype(np.float32)
        w[1, :g] = 0  # an all-zero group
        packed, scale = w4a8moe.quantize_int4(w, g)
        self.assertEqual(packed.shape, (6, 4 * g // 8))
        self.assertEqual(scale.shape, (6, 4))
        self.assertEqual(scale.dtype, np.uint16)
        s = Q.bf16_to_f32(scale)
        wb = Q.round_bf16(w).reshape(6, 4, g)
        self.assertTrue(np.array_equal(s, Q.round_bf16(np.abs(wb).max(-1) / np.float32(7.5))))
        self.assertEqual(s[1, 0], 0)
        q = Q.unpack_int4(packed).reshape(6, 4, g)
        self.assertTrue((q[1, 0] == 0).all())
        self.assertEqual(int(q.min()), -8)  # absmax / 7.5 makes the most negative value -7.5 → -8
        # every q is the rounded bf16 quotient (ties to even)
        safe = np.where(s == 0, 1, s)[..., None]
        want = np.clip(np.round(Q.round_bf16(wb / safe)), -8, 7)
        want[s == 0] = 0
        self.assertTrue(np.array_equal(q, want))
        # dequantised weights are within half a step of the bf16 weights (plus the bf16
        # rounding of the scale, which can push absmax / scale a little past 7.5)
        deq = w4a8moe.dequantize_int4(packed, scale, g).reshape(6, 4, g)
        err = np.abs(deq - wb)
        self.assertTrue((err <= 0.53 * s[..., None]).all(), f"max err {err.max()}")


if __name__ == "__main__":
    unittest.main()
