// Kernel gradients of stride-1 convolutions for XLA:CPU, as XLA FFI
// handlers (nas_jax/children/cpu_kernels.py builds and registers them).
//
// Why: XLA:CPU has no single-pass kernel for these. It runs a depthwise
// kernel gradient as one reduction over the whole batch per kernel tap
// (each reading the activations and the output gradient again) and a dense
// one as a convolution whose window is the whole image, after transposing
// both operands; together they were about 40% of a seed-003 child's train
// step on one core (benchmarks/README.md, "Speed against plain PyTorch").
// Here each output gradient vector is read once and multiplied into every
// tap's accumulators while they sit in registers.
//
// Both take x [L..., B, H, W, Ci] and g [L..., B, H, W, Co] (float32,
// row-major NHWC; L... are leading vmap dimensions) and return, per leading
// index, sum over b, y, x of xpad[b, y + i*dh, x + j*dw, :] (outer) g[b, y,
// x, :], where xpad is x zero-padded by (ph, pw) before: "SAME" padding
// whose extra pixel goes after, as XLA and Flax pad.
//   depthwise: Ci == Co == C, the channel-wise product: dk [L..., kh, kw, C]
//   dense:     the outer product:                     dk [L..., kh, kw, Ci, Co]

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int kLanes = 16;  // channels per block: one AVX-512 register

struct Geometry {
  int64_t lead, b, h, w, ci, co;
  int64_t kh, kw, dh, dw, ph, pw;
};

// Rows y of g for which tap row i reads inside x: 0 <= y + i*dh - ph < h.
inline void valid_range(int64_t n, int64_t offset, int64_t* lo, int64_t* hi) {
  *lo = std::max<int64_t>(0, -offset);
  *hi = std::min<int64_t>(n, n - offset);
}

// Runs fn(part) for every part in [0, parts) on the calling thread and on
// XLA's intra-op thread pool. Parts are handed out by an atomic counter, so
// the caller never waits for a task that has not started (no deadlock when
// the pool's only thread is the caller); it waits only for parts other
// threads took.
template <typename F>
void parallel_parts(ffi::ThreadPool& pool, int64_t parts, const F& fn) {
  struct Shared {
    std::atomic<int64_t> next{0}, done{0};
    std::mutex mu;
    std::condition_variable cv;
  };
  auto shared = std::make_shared<Shared>();
  const F* body = &fn;
  auto work = [shared, parts, body] {
    for (int64_t p; (p = shared->next.fetch_add(1)) < parts;) {
      (*body)(p);
      if (shared->done.fetch_add(1) + 1 == parts) {
        std::lock_guard<std::mutex> lock(shared->mu);
        shared->cv.notify_all();
      }
    }
  };
  for (int64_t t = 1; t < parts; ++t) pool.Schedule(decltype(work)(work));
  work();
  std::unique_lock<std::mutex> lock(shared->mu);
  shared->cv.wait(lock, [&] { return shared->done.load() == parts; });
}

// How many batch ranges to split a call into: one per thread of the pool
// (the caller runs on one of them), at most one per image. A one-thread
// pool gets one part: splitting there only added work (measured).
inline int64_t num_parts(ffi::ThreadPool& pool, int64_t batch) {
  return std::max<int64_t>(1, std::min<int64_t>(batch, pool.num_threads()));
}

// A vector of 16 floats (GCC/Clang vector extension): one AVX-512
// register, two AVX2 ones.
typedef float v16 __attribute__((vector_size(64)));

// The first n (< 16) floats at p, zero-padded. (A full vector is a
// fixed-size memcpy, which compiles to one unaligned load.)
inline v16 load_part(const float* p, int64_t n) {
  alignas(64) float buf[kLanes] = {};
  for (int64_t k = 0; k < n; ++k) buf[k] = p[k];
  v16 v;
  std::memcpy(&v, buf, sizeof(v));
  return v;
}

inline v16 load_full(const float* p) {
  v16 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// Adds to acc[r] (r < 16 input channels of the block ci0, 16 output
// channels of the block co0) the products of tap (i, j) over images
// [b0, b1). NCI, the block's input channels, is a template argument so
// that the accumulators stay in registers; FULL: 16 output channels.
template <int NCI, bool FULL>
void dense_tap(const Geometry& q, const float* x, const float* g, int64_t b0,
               int64_t b1, int64_t i, int64_t j, int64_t ci0, int64_t co0,
               int64_t nco, v16* acc) {
  v16 a[kLanes];
  for (int r = 0; r < kLanes; ++r) a[r] = acc[r];
  int64_t y_lo, y_hi, x_lo, x_hi;
  valid_range(q.h, i * q.dh - q.ph, &y_lo, &y_hi);
  valid_range(q.w, j * q.dw - q.pw, &x_lo, &x_hi);
  for (int64_t b = b0; b < b1; ++b) {
    for (int64_t y = y_lo; y < y_hi; ++y) {
      const int64_t sy = y + i * q.dh - q.ph;
      const float* grow = g + ((b * q.h + y) * q.w) * q.co + co0;
      const float* xrow = x + ((b * q.h + sy) * q.w) * q.ci + ci0;
      for (int64_t xx = x_lo; xx < x_hi; ++xx) {
        const v16 gv = FULL ? load_full(grow + xx * q.co)
                            : load_part(grow + xx * q.co, nco);
        const float* xp = xrow + (xx + j * q.dw - q.pw) * q.ci;
        for (int r = 0; r < NCI; ++r) a[r] += xp[r] * gv;
      }
    }
  }
  for (int r = 0; r < kLanes; ++r) acc[r] = a[r];
}

template <int NCI>
void dense_tap_any(const Geometry& q, const float* x, const float* g,
                   int64_t b0, int64_t b1, int64_t i, int64_t j, int64_t ci0,
                   int64_t co0, int64_t nco, v16* acc) {
  if (nco == kLanes)
    dense_tap<NCI, true>(q, x, g, b0, b1, i, j, ci0, co0, nco, acc);
  else
    dense_tap<NCI, false>(q, x, g, b0, b1, i, j, ci0, co0, nco, acc);
}

using TapFn = void (*)(const Geometry&, const float*, const float*, int64_t,
                       int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                       v16*);
constexpr TapFn kTapFns[kLanes + 1] = {
    nullptr, dense_tap_any<1>, dense_tap_any<2>, dense_tap_any<3>,
    dense_tap_any<4>, dense_tap_any<5>, dense_tap_any<6>, dense_tap_any<7>,
    dense_tap_any<8>, dense_tap_any<9>, dense_tap_any<10>, dense_tap_any<11>,
    dense_tap_any<12>, dense_tap_any<13>, dense_tap_any<14>,
    dense_tap_any<15>, dense_tap_any<16>};

void dense(const Geometry& q, const float* x, const float* g, float* dk) {
  const int64_t taps = q.kh * q.kw;
  // Images per chunk: a chunk of x and g (about 256 KiB) stays in cache
  // while every tap sweeps it.
  const int64_t per_image = q.h * q.w * (q.ci + q.co);
  const int64_t chunk = std::max<int64_t>(1, (1 << 16) / per_image);
  std::vector<v16> acc(taps * kLanes);
  for (int64_t ci0 = 0; ci0 < q.ci; ci0 += kLanes) {
    const int64_t nci = std::min<int64_t>(kLanes, q.ci - ci0);
    for (int64_t co0 = 0; co0 < q.co; co0 += kLanes) {
      const int64_t nco = std::min<int64_t>(kLanes, q.co - co0);
      std::fill(acc.begin(), acc.end(), v16{});
      for (int64_t b0 = 0; b0 < q.b; b0 += chunk) {
        const int64_t b1 = std::min(q.b, b0 + chunk);
        for (int64_t t = 0; t < taps; ++t) {
          kTapFns[nci](q, x, g, b0, b1, t / q.kw, t % q.kw, ci0, co0, nco,
                       acc.data() + t * kLanes);
        }
      }
      for (int64_t t = 0; t < taps; ++t)
        for (int64_t r = 0; r < nci; ++r)
          for (int64_t c = 0; c < nco; ++c)
            dk[(t * q.ci + ci0 + r) * q.co + co0 + c] = acc[t * kLanes + r][c];
    }
  }
}

// dk[t, c] for one channel block [c0, c0 + nc) of one leading index: each
// pixel's output gradient vector is read once and multiplied into every
// tap's accumulator. FULL: nc == 16.
template <bool FULL>
void depthwise_block(const Geometry& q, const float* x, const float* g,
                     int64_t c0, int64_t nc, float* dk) {
  const int64_t taps = q.kh * q.kw;
  std::vector<v16> acc(taps);  // up to 7x7 (refused above in Python)
  for (int64_t b = 0; b < q.b; ++b) {
    for (int64_t y = 0; y < q.h; ++y) {
      for (int64_t xx = 0; xx < q.w; ++xx) {
        const float* gp = g + ((b * q.h + y) * q.w + xx) * q.co + c0;
        const v16 gv = FULL ? load_full(gp) : load_part(gp, nc);
        for (int64_t i = 0; i < q.kh; ++i) {
          const int64_t sy = y + i * q.dh - q.ph;
          if (sy < 0 || sy >= q.h) continue;
          for (int64_t j = 0; j < q.kw; ++j) {
            const int64_t sx = xx + j * q.dw - q.pw;
            if (sx < 0 || sx >= q.w) continue;
            const float* xp = x + ((b * q.h + sy) * q.w + sx) * q.ci + c0;
            acc[i * q.kw + j] += (FULL ? load_full(xp) : load_part(xp, nc)) * gv;
          }
        }
      }
    }
  }
  for (int64_t t = 0; t < taps; ++t)
    for (int64_t c = 0; c < nc; ++c) dk[t * q.co + c0 + c] = acc[t][c];
}

template <bool kDepthwise>
void kernel_grad(const Geometry& q, const float* x, const float* g,
                 float* dk) {
  if (kDepthwise) {
    for (int64_t c0 = 0; c0 < q.co; c0 += kLanes) {
      const int64_t nc = std::min<int64_t>(kLanes, q.co - c0);
      if (nc == kLanes)
        depthwise_block<true>(q, x, g, c0, nc, dk);
      else
        depthwise_block<false>(q, x, g, c0, nc, dk);
    }
  } else {
    dense(q, x, g, dk);
  }
}

// The product of the leading (vmap) dimensions x and the other operand
// share, or -1 if they differ; both have rank >= 4 and the same rank.
template <typename Dims>
int64_t leading_count(const Dims& a, const Dims& b) {
  int64_t lead = 1;
  for (int64_t d = 0; d + 4 < static_cast<int64_t>(a.size()); ++d) {
    if (a[d] != b[d]) return -1;
    lead *= a[d];
  }
  return lead;
}

template <bool kDepthwise>
ffi::Error KernelGrad(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                      ffi::Buffer<ffi::F32> g,
                      int64_t kh, int64_t kw, int64_t dh, int64_t dw,
                      int64_t ph, int64_t pw,
                      ffi::ResultBuffer<ffi::F32> dk) {
  const auto xd = x.dimensions();
  const auto gd = g.dimensions();
  const int64_t rank = xd.size();
  if (rank < 4 || static_cast<int64_t>(gd.size()) != rank)
    return ffi::Error::InvalidArgument("x and g must be [..., B, H, W, C]");
  Geometry q{leading_count(xd, gd), xd[rank - 4], xd[rank - 3],
             xd[rank - 2], xd[rank - 1], gd[rank - 1], kh, kw, dh, dw, ph,
             pw};
  if (q.lead < 0) return ffi::Error::InvalidArgument("leading dims differ");
  for (int64_t d = rank - 4; d < rank - 1; ++d)
    if (xd[d] != gd[d]) return ffi::Error::InvalidArgument("B, H, W differ");
  if (kDepthwise && q.ci != q.co)
    return ffi::Error::InvalidArgument("depthwise needs Ci == Co");
  if (kDepthwise && kh * kw > 49)
    return ffi::Error::InvalidArgument("depthwise kernels up to 7x7");
  const int64_t in_size = q.b * q.h * q.w;
  const int64_t out_size = kh * kw * (kDepthwise ? q.co : q.ci * q.co);
  float* out = dk->typed_data();
  // Each part sums over its own range of images into its own buffer.
  const int64_t parts = num_parts(pool, q.b);
  std::vector<float> partial(parts * out_size);
  for (int64_t l = 0; l < q.lead; ++l) {
    const float* xl = x.typed_data() + l * in_size * q.ci;
    const float* gl = g.typed_data() + l * in_size * q.co;
    float* ol = out + l * out_size;
    parallel_parts(pool, parts, [&](int64_t p) {
      const int64_t b0 = q.b * p / parts, b1 = q.b * (p + 1) / parts;
      Geometry qp = q;
      qp.b = b1 - b0;
      kernel_grad<kDepthwise>(qp, xl + b0 * q.h * q.w * q.ci,
                              gl + b0 * q.h * q.w * q.co,
                              partial.data() + p * out_size);
    });
    std::copy(partial.begin(), partial.begin() + out_size, ol);
    for (int64_t p = 1; p < parts; ++p)
      for (int64_t i = 0; i < out_size; ++i) ol[i] += partial[p * out_size + i];
  }
  return ffi::Error::Success();
}

// -- The convolution itself: y = x * k, stride 1, "SAME" -------------------

// y[b, y, x0 + t, co0 : co0 + 16] for t < Q (a tile of Q pixels of one
// row), from the zero-padded image xp [Hp, Wp, Ci] of image b and the
// packed kernel kp [kh, kw, Ci, Cop] (Co zero-padded to whole vectors):
// every kernel vector is loaded once per tile and multiplied into Q
// accumulators held in registers. FULL: 16 output channels to store.
template <int Q, bool FULL>
void conv_tile(const Geometry& q, const float* xp, int64_t wp,
                      const float* kp, int64_t cop, int64_t yy, int64_t x0,
                      int64_t co0, int64_t nco, float* out) {
  v16 acc[Q];
  for (int t = 0; t < Q; ++t) acc[t] = v16{};
  for (int64_t i = 0; i < q.kh; ++i) {
    const float* xrow = xp + ((yy + i * q.dh) * wp + x0) * q.ci;
    for (int64_t j = 0; j < q.kw; ++j) {
      const float* xs = xrow + j * q.dw * q.ci;
      const float* kt = kp + ((i * q.kw + j) * q.ci) * cop + co0;
      for (int64_t ci = 0; ci < q.ci; ++ci) {
        const v16 kv = load_full(kt + ci * cop);
        for (int t = 0; t < Q; ++t) acc[t] += xs[t * q.ci + ci] * kv;
      }
    }
  }
  for (int t = 0; t < Q; ++t) {
    float* o = out + t * q.co;
    if (FULL) {
      std::memcpy(o, &acc[t], sizeof(v16));
    } else {  // through memory: indexing a register by a variable spills it
      alignas(64) float buf[kLanes];
      std::memcpy(buf, &acc[t], sizeof(v16));
      for (int64_t c = 0; c < nco; ++c) o[c] = buf[c];
    }
  }
}

constexpr int kTile = 8;  // pixels per tile: 8 accumulators + 1 kernel vector

template <bool FULL>
void conv_row(const Geometry& q, const float* xp, int64_t wp, const float* kp,
              int64_t cop, int64_t yy, int64_t co0, int64_t nco,
              float* out_row) {
  int64_t x0 = 0;
  for (; x0 + kTile <= q.w; x0 += kTile)
    conv_tile<kTile, FULL>(q, xp, wp, kp, cop, yy, x0, co0, nco,
                           out_row + x0 * q.co + co0);
  // The row's last w % 8 pixels, as one narrower tile.
  using TileFn = void (*)(const Geometry&, const float*, int64_t,
                          const float*, int64_t, int64_t, int64_t, int64_t,
                          int64_t, float*);
  static constexpr TileFn kRest[kTile] = {
      nullptr, conv_tile<1, FULL>, conv_tile<2, FULL>, conv_tile<3, FULL>,
      conv_tile<4, FULL>, conv_tile<5, FULL>, conv_tile<6, FULL>,
      conv_tile<7, FULL>};
  if (x0 < q.w)
    kRest[q.w - x0](q, xp, wp, kp, cop, yy, x0, co0, nco,
                    out_row + x0 * q.co + co0);
}

// y [B, H, W, Co] = x [B, H, W, Ci] * k [kh, kw, Ci, Co] for one leading
// index; pads (ph, pw) before, the rest after ("SAME").
void conv_forward(const Geometry& q, const float* x, const float* k,
                  float* y) {
  const int64_t hp = q.h + (q.kh - 1) * q.dh, wp = q.w + (q.kw - 1) * q.dw;
  std::vector<float> xp(hp * wp * q.ci);
  const int64_t cop = (q.co + kLanes - 1) / kLanes * kLanes;
  std::vector<float> kp(q.kh * q.kw * q.ci * cop, 0.0f);
  for (int64_t r = 0; r < q.kh * q.kw * q.ci; ++r)
    std::memcpy(&kp[r * cop], k + r * q.co, q.co * sizeof(float));
  for (int64_t b = 0; b < q.b; ++b) {
    std::fill(xp.begin(), xp.end(), 0.0f);
    for (int64_t r = 0; r < q.h; ++r)
      std::memcpy(&xp[((r + q.ph) * wp + q.pw) * q.ci],
                  x + (b * q.h + r) * q.w * q.ci, q.w * q.ci * sizeof(float));
    for (int64_t r = 0; r < q.h; ++r) {
      float* out_row = y + (b * q.h + r) * q.w * q.co;
      for (int64_t co0 = 0; co0 < q.co; co0 += kLanes) {
        const int64_t nco = std::min<int64_t>(kLanes, q.co - co0);
        if (nco == kLanes)
          conv_row<true>(q, xp.data(), wp, kp.data(), cop, r, co0, nco,
                         out_row);
        else
          conv_row<false>(q, xp.data(), wp, kp.data(), cop, r, co0, nco,
                          out_row);
      }
    }
  }
}

ffi::Error Conv(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                ffi::Buffer<ffi::F32> k,
                int64_t dh, int64_t dw, int64_t ph, int64_t pw,
                ffi::ResultBuffer<ffi::F32> y) {
  const auto xd = x.dimensions();
  const auto kd = k.dimensions();
  const int64_t rank = xd.size();
  if (rank < 4 || static_cast<int64_t>(kd.size()) != rank)
    return ffi::Error::InvalidArgument("x [..., B, H, W, Ci], k [..., kh, kw, Ci, Co]");
  Geometry q{leading_count(xd, kd), xd[rank - 4], xd[rank - 3],
             xd[rank - 2], xd[rank - 1], kd[rank - 1], kd[rank - 4],
             kd[rank - 3], dh, dw, ph, pw};
  if (q.lead < 0) return ffi::Error::InvalidArgument("leading dims differ");
  if (kd[rank - 2] != q.ci)
    return ffi::Error::InvalidArgument("x and k disagree on Ci");
  const int64_t x_size = q.b * q.h * q.w * q.ci;
  const int64_t k_size = q.kh * q.kw * q.ci * q.co;
  const int64_t y_size = q.b * q.h * q.w * q.co;
  const int64_t parts = num_parts(pool, q.b);
  for (int64_t l = 0; l < q.lead; ++l) {
    const float* xl = x.typed_data() + l * x_size;
    const float* kl = k.typed_data() + l * k_size;
    float* yl = y->typed_data() + l * y_size;
    parallel_parts(pool, parts, [&](int64_t p) {
      const int64_t b0 = q.b * p / parts, b1 = q.b * (p + 1) / parts;
      Geometry qp = q;
      qp.b = b1 - b0;
      conv_forward(qp, xl + b0 * q.h * q.w * q.ci, kl,
                   yl + b0 * q.h * q.w * q.co);
    });
  }
  return ffi::Error::Success();
}

}  // namespace

#define NAS_JAX_BIND                         \
  ffi::Ffi::Bind()                           \
      .Ctx<ffi::ThreadPool>()                \
      .Arg<ffi::Buffer<ffi::F32>>()          \
      .Arg<ffi::Buffer<ffi::F32>>()          \
      .Attr<int64_t>("kh")                   \
      .Attr<int64_t>("kw")                   \
      .Attr<int64_t>("dh")                   \
      .Attr<int64_t>("dw")                   \
      .Attr<int64_t>("ph")                   \
      .Attr<int64_t>("pw")                   \
      .Ret<ffi::Buffer<ffi::F32>>()

XLA_FFI_DEFINE_HANDLER_SYMBOL(NasJaxDepthwiseKernelGrad, KernelGrad<true>,
                              NAS_JAX_BIND);
XLA_FFI_DEFINE_HANDLER_SYMBOL(NasJaxDenseKernelGrad, KernelGrad<false>,
                              NAS_JAX_BIND);

XLA_FFI_DEFINE_HANDLER_SYMBOL(NasJaxConv, Conv,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("dh")
                                  .Attr<int64_t>("dw")
                                  .Attr<int64_t>("ph")
                                  .Attr<int64_t>("pw")
                                  .Ret<ffi::Buffer<ffi::F32>>());
