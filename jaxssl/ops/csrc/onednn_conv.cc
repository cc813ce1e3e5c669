// 2-D convolutions (forward, input gradient, kernel gradient) through oneDNN, as XLA FFI custom calls on the CPU.
//
// Layouts are jaxssl's: NHWC activations, HWIO kernels, float32 or bfloat16 (all operands one type; oneDNN
// accumulates bfloat16 products in float32). oneDNN computes on NHWC activations directly
// and on kernels in the blocked layout its primitive chooses; kernels are reordered from (and kernel gradients
// back to) HWIO on every call, which costs little next to the convolution. Primitives are created once per
// shape and kept. Calls run one at a time: each already uses every core (OpenMP), and XLA may start independent
// ones (a layer's input and kernel gradients) together, which would oversubscribe the cores.
//
// Also batch normalization in training mode (statistics of the batch), optionally fused with the ReLU after it,
// forward and backward: one pass over the tensor for the statistics and one to normalize (and two backward),
// where XLA's fusions made several. (oneDNN 3.2 has no CPU kernel for fuse_norm_add_relu, ResNet's residual.)
// Built at first use by jaxssl/ops/onednn.py against the oneDNN the environment provides.

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <unordered_map>
#include <algorithm>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;
using dims = dnnl::memory::dims;

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

struct Geometry {
  dims src, weights, dst, strides, pad_l, pad_r;
  dt type;
};

dt DataType(ffi::DataType t) {
  if (t == ffi::DataType::F32) return dt::f32;
  if (t == ffi::DataType::BF16) return dt::bf16;
  throw dnnl::error(dnnl_invalid_arguments, "convolutions take float32 or bfloat16");
}

// x: [N, H, W, C], w: [KH, KW, C, O], y: [N, Ho, Wo, O] as oneDNN's logical NCHW / OIHW dims.
Geometry Describe(ffi::Span<const int64_t> x, ffi::Span<const int64_t> w, ffi::Span<const int64_t> y,
                  int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr, ffi::DataType type) {
  return Geometry{{x[0], x[3], x[1], x[2]}, {w[3], w[2], w[0], w[1]}, {y[0], y[3], y[1], y[2]},
                  {sh, sw}, {pt, pl}, {pb, pr}, DataType(type)};
}

std::mutex& CallMutex() {
  static std::mutex m;
  return m;
}

std::vector<int64_t> Key(int kind, const Geometry& g) {
  std::vector<int64_t> key{kind, static_cast<int64_t>(g.type)};
  for (const dims* d : {&g.src, &g.weights, &g.dst, &g.strides, &g.pad_l, &g.pad_r}) {
    key.insert(key.end(), d->begin(), d->end());
  }
  return key;
}

// A primitive and its descriptor per shape, created on first use (under CallMutex).
template <typename Primitive, typename Make>
const std::tuple<typename Primitive::primitive_desc, Primitive>& Cached(int kind, const Geometry& g, Make make) {
  static std::map<std::vector<int64_t>, std::tuple<typename Primitive::primitive_desc, Primitive>> cache;
  auto key = Key(kind, g);
  auto it = cache.find(key);
  if (it == cache.end()) {
    auto pd = make();
    it = cache.emplace(key, std::make_tuple(pd, Primitive(pd))).first;
  }
  return it->second;
}

dnnl::convolution_forward::primitive_desc ForwardDesc(const Geometry& g) {
  return dnnl::convolution_forward::primitive_desc(
      Engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
      dnnl::memory::desc(g.src, g.type, tag::nhwc), dnnl::memory::desc(g.weights, g.type, tag::any),
      dnnl::memory::desc(g.dst, g.type, tag::nhwc), g.strides, g.pad_l, g.pad_r);
}

// Both backward primitives take the same descriptors, with the forward one as a hint.
template <typename Primitive>
typename Primitive::primitive_desc BackwardDesc(const Geometry& g) {
  return typename Primitive::primitive_desc(
      Engine(), dnnl::algorithm::convolution_direct, dnnl::memory::desc(g.src, g.type, tag::nhwc),
      dnnl::memory::desc(g.weights, g.type, tag::any), dnnl::memory::desc(g.dst, g.type, tag::nhwc), g.strides,
      g.pad_l, g.pad_r, ForwardDesc(g));
}

// HWIO user kernel <-> the primitive's kernel layout.
dnnl::memory UserWeights(const Geometry& g, void* data) {
  return dnnl::memory(dnnl::memory::desc(g.weights, g.type, tag::hwio), Engine(), data);
}

dnnl::memory Reordered(dnnl::stream& s, dnnl::memory from, const dnnl::memory::desc& to_desc) {
  if (from.get_desc() == to_desc) return from;
  dnnl::memory to(to_desc, Engine());
  dnnl::reorder(from, to).execute(s, from, to);
  return to;
}

template <typename F>
ffi::Error Guarded(F&& f) {
  std::lock_guard<std::mutex> lock(CallMutex());
  try {
    f();
  } catch (const dnnl::error& e) {
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("oneDNN: ") + e.what());
  }
  return ffi::Error::Success();
}

ffi::Error Forward(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> y, int64_t sh, int64_t sw,
                   int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
  return Guarded([&] {
    Geometry g = Describe(x.dimensions(), w.dimensions(), y->dimensions(), sh, sw, pt, pb, pl, pr, x.element_type());
    const auto& [pd, conv] = Cached<dnnl::convolution_forward>(0, g, [&] { return ForwardDesc(g); });
    dnnl::stream s(Engine());
    dnnl::memory src(pd.src_desc(), Engine(), x.untyped_data());
    dnnl::memory dst(pd.dst_desc(), Engine(), y->untyped_data());
    dnnl::memory weights = Reordered(s, UserWeights(g, w.untyped_data()), pd.weights_desc());
    conv.execute(
        s, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, dst}});
    s.wait();
  });
}

ffi::Error InputGrad(ffi::AnyBuffer dy, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> dx, int64_t sh, int64_t sw,
                     int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
  return Guarded([&] {
    Geometry g =
        Describe(dx->dimensions(), w.dimensions(), dy.dimensions(), sh, sw, pt, pb, pl, pr, dy.element_type());
    using Primitive = dnnl::convolution_backward_data;
    const auto& [pd, conv] = Cached<Primitive>(1, g, [&] { return BackwardDesc<Primitive>(g); });
    dnnl::stream s(Engine());
    dnnl::memory diff_dst(pd.diff_dst_desc(), Engine(), dy.untyped_data());
    dnnl::memory diff_src(pd.diff_src_desc(), Engine(), dx->untyped_data());
    dnnl::memory weights = Reordered(s, UserWeights(g, w.untyped_data()), pd.weights_desc());
    conv.execute(
        s, {{DNNL_ARG_DIFF_DST, diff_dst}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DIFF_SRC, diff_src}});
    s.wait();
  });
}

ffi::Error KernelGrad(ffi::AnyBuffer x, ffi::AnyBuffer dy, ffi::Result<ffi::AnyBuffer> dw, int64_t sh, int64_t sw,
                      int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
  return Guarded([&] {
    Geometry g =
        Describe(x.dimensions(), dw->dimensions(), dy.dimensions(), sh, sw, pt, pb, pl, pr, x.element_type());
    using Primitive = dnnl::convolution_backward_weights;
    const auto& [pd, conv] = Cached<Primitive>(2, g, [&] { return BackwardDesc<Primitive>(g); });
    dnnl::stream s(Engine());
    dnnl::memory src(pd.src_desc(), Engine(), x.untyped_data());
    dnnl::memory diff_dst(pd.diff_dst_desc(), Engine(), dy.untyped_data());
    dnnl::memory user = UserWeights(g, dw->untyped_data());
    bool direct = pd.diff_weights_desc() == user.get_desc();
    dnnl::memory diff_weights = direct ? user : dnnl::memory(pd.diff_weights_desc(), Engine());
    conv.execute(
        s, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_DST, diff_dst}, {DNNL_ARG_DIFF_WEIGHTS, diff_weights}});
    if (!direct) dnnl::reorder(diff_weights, user).execute(s, diff_weights, user);
    s.wait();
  });
}


// ---- batch normalization ------------------------------------------------------------------------------------

// fuse: 0 none, 1 ReLU after.
dnnl::normalization_flags BnFlags(int64_t fuse) {
  auto f = dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift;
  return fuse == 1 ? f | dnnl::normalization_flags::fuse_norm_relu : f;
}

// x: [N, H, W, C] (any rank >= 2 with channels last: leading dims fold into N), float32 or bfloat16; the
// per-channel scale, shift, mean and variance are float32 either way.
dnnl::memory::desc BnData(ffi::Span<const int64_t> x, ffi::DataType type) {
  int64_t n = 1;
  for (size_t i = 0; i + 1 < x.size(); ++i) n *= x[i];
  return dnnl::memory::desc({n, x[x.size() - 1], 1, 1}, DataType(type), tag::nhwc);
}

dnnl::batch_normalization_forward::primitive_desc BnForwardDesc(const dnnl::memory::desc& data, float eps,
                                                                 int64_t fuse) {
  return dnnl::batch_normalization_forward::primitive_desc(Engine(), dnnl::prop_kind::forward_training, data, data,
                                                            eps, BnFlags(fuse));
}

template <typename Primitive, typename Make>
const std::tuple<typename Primitive::primitive_desc, Primitive>& BnCached(int kind, const dnnl::memory::desc& d,
                                                                           float eps, int64_t fuse, Make make) {
  static std::map<std::tuple<int, dims, int, float, int64_t>,
                  std::tuple<typename Primitive::primitive_desc, Primitive>> cache;
  auto key = std::make_tuple(kind, d.get_dims(), static_cast<int>(d.get_data_type()), eps, fuse);
  auto it = cache.find(key);
  if (it == cache.end()) {
    auto pd = make();
    it = cache.emplace(key, std::make_tuple(pd, Primitive(pd))).first;
  }
  return it->second;
}

dnnl::memory Channels(const dnnl::memory::desc& data, void* p) {
  return dnnl::memory(dnnl::memory::desc({data.get_dims()[1]}, dt::f32, tag::a), Engine(), p);
}

ffi::Error BnForward(ffi::AnyBuffer x, ffi::Buffer<ffi::F32> scale, ffi::Buffer<ffi::F32> shift,
                     ffi::Result<ffi::AnyBuffer> y, ffi::ResultBuffer<ffi::F32> mean, ffi::ResultBuffer<ffi::F32> var,
                     ffi::ResultBuffer<ffi::U8> ws, float eps, int64_t fuse) {
  return Guarded([&] {
    auto data = BnData(x.dimensions(), x.element_type());
    using Primitive = dnnl::batch_normalization_forward;
    const auto& [pd, bn] = BnCached<Primitive>(0, data, eps, fuse, [&] { return BnForwardDesc(data, eps, fuse); });
    dnnl::stream s(Engine());
    std::unordered_map<int, dnnl::memory> args{
        {DNNL_ARG_SRC, dnnl::memory(data, Engine(), x.untyped_data())},
        {DNNL_ARG_DST, dnnl::memory(data, Engine(), y->untyped_data())},
        {DNNL_ARG_SCALE, Channels(data, scale.typed_data())},
        {DNNL_ARG_SHIFT, Channels(data, shift.typed_data())},
        {DNNL_ARG_MEAN, Channels(data, mean->typed_data())},
        {DNNL_ARG_VARIANCE, Channels(data, var->typed_data())}};
    if (fuse != 0) args[DNNL_ARG_WORKSPACE] = dnnl::memory(pd.workspace_desc(), Engine(), ws->typed_data());
    bn.execute(s, args);
    s.wait();
  });
}

ffi::Error BnBackward(ffi::AnyBuffer x, ffi::AnyBuffer dy, ffi::Buffer<ffi::F32> scale,
                      ffi::Buffer<ffi::F32> mean, ffi::Buffer<ffi::F32> var, ffi::Buffer<ffi::U8> ws,
                      ffi::Result<ffi::AnyBuffer> dx, ffi::ResultBuffer<ffi::F32> dscale,
                      ffi::ResultBuffer<ffi::F32> dshift, float eps, int64_t fuse) {
  return Guarded([&] {
    auto data = BnData(x.dimensions(), x.element_type());
    using Primitive = dnnl::batch_normalization_backward;
    const auto& [pd, bn] = BnCached<Primitive>(1, data, eps, fuse, [&] {
      return Primitive::primitive_desc(Engine(), dnnl::prop_kind::backward, data, data, data, eps, BnFlags(fuse),
                                       BnForwardDesc(data, eps, fuse));
    });
    dnnl::stream s(Engine());
    std::unordered_map<int, dnnl::memory> args{
        {DNNL_ARG_SRC, dnnl::memory(data, Engine(), x.untyped_data())},
        {DNNL_ARG_DIFF_DST, dnnl::memory(data, Engine(), dy.untyped_data())},
        {DNNL_ARG_DIFF_SRC, dnnl::memory(data, Engine(), dx->untyped_data())},
        {DNNL_ARG_SCALE, Channels(data, scale.typed_data())},
        {DNNL_ARG_MEAN, Channels(data, mean.typed_data())},
        {DNNL_ARG_VARIANCE, Channels(data, var.typed_data())},
        {DNNL_ARG_DIFF_SCALE, Channels(data, dscale->typed_data())},
        {DNNL_ARG_DIFF_SHIFT, Channels(data, dshift->typed_data())}};
    if (fuse != 0) args[DNNL_ARG_WORKSPACE] = dnnl::memory(pd.workspace_desc(), Engine(), ws.typed_data());
    bn.execute(s, args);
    s.wait();
  });
}

}  // namespace

// oneDNN's implementation of a representative 3x3 convolution's forward and both gradients in float32 (0) or
// bfloat16 (1), "fwd|bwd_d|bwd_w" (e.g. "brg:avx512_core_bf16|..."): where it is a reference ("ref") kernel,
// this CPU has no fast one for that type. Called from Python (ctypes).
extern "C" int64_t JaxsslOnednnConvImpl(int64_t bf16, char* out, int64_t out_len) {
  try {
    std::lock_guard<std::mutex> lock(CallMutex());
    Geometry g{{32, 64, 16, 16}, {64, 64, 3, 3}, {32, 64, 16, 16}, {1, 1}, {1, 1}, {1, 1}, bf16 ? dt::bf16 : dt::f32};
    std::string name = std::string(ForwardDesc(g).impl_info_str()) + "|" +
                       BackwardDesc<dnnl::convolution_backward_data>(g).impl_info_str() + "|" +
                       BackwardDesc<dnnl::convolution_backward_weights>(g).impl_info_str();
    name.copy(out, out_len - 1);
    out[std::min<int64_t>(name.size(), out_len - 1)] = 0;
    return 0;
  } catch (const dnnl::error& e) {
    std::string what = e.what();
    what.copy(out, out_len - 1);
    out[std::min<int64_t>(what.size(), out_len - 1)] = 0;
    return -1;
  }
}

// Bytes of the workspace (the ReLU's mask) a fused forward leaves for its backward, and which implementation
// oneDNN picked; called from Python (ctypes) when a batch norm is traced. Returns -1 where oneDNN has none.
extern "C" int64_t JaxsslOnednnBnWorkspaceBytes(int64_t n, int64_t c, int64_t fuse, int64_t bf16, char* impl,
                                                int64_t impl_len) {
  try {
    std::lock_guard<std::mutex> lock(CallMutex());
    auto pd = BnForwardDesc(dnnl::memory::desc({n, c, 1, 1}, bf16 ? dt::bf16 : dt::f32, tag::nhwc), 1e-5f, fuse);
    std::string name = pd.impl_info_str();
    if (impl_len > 0) {
      name.copy(impl, impl_len - 1);
      impl[std::min<int64_t>(name.size(), impl_len - 1)] = 0;
    }
    return fuse == 0 ? 0 : static_cast<int64_t>(pd.workspace_desc().get_size());
  } catch (const dnnl::error&) {
    return -1;
  }
}

#define JAXSSL_CONV_ATTRS                                                                              \
  .Attr<int64_t>("stride_h").Attr<int64_t>("stride_w").Attr<int64_t>("pad_top").Attr<int64_t>("pad_bottom") \
      .Attr<int64_t>("pad_left").Attr<int64_t>("pad_right")

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxsslOnednnConvForward, Forward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>() JAXSSL_CONV_ATTRS);
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxsslOnednnConvInputGrad, InputGrad,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>() JAXSSL_CONV_ATTRS);
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxsslOnednnConvKernelGrad, KernelGrad,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>() JAXSSL_CONV_ATTRS);
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxsslOnednnBnForward, BnForward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()  // x
                                  .Arg<ffi::Buffer<ffi::F32>>()  // scale
                                  .Arg<ffi::Buffer<ffi::F32>>()  // shift
                                  .Ret<ffi::AnyBuffer>()  // y
                                  .Ret<ffi::Buffer<ffi::F32>>()  // mean
                                  .Ret<ffi::Buffer<ffi::F32>>()  // variance (biased)
                                  .Ret<ffi::Buffer<ffi::U8>>()   // workspace
                                  .Attr<float>("eps")
                                  .Attr<int64_t>("fuse"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxsslOnednnBnBackward, BnBackward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()  // x
                                  .Arg<ffi::AnyBuffer>()  // dy
                                  .Arg<ffi::Buffer<ffi::F32>>()  // scale
                                  .Arg<ffi::Buffer<ffi::F32>>()  // mean
                                  .Arg<ffi::Buffer<ffi::F32>>()  // variance
                                  .Arg<ffi::Buffer<ffi::U8>>()   // workspace
                                  .Ret<ffi::AnyBuffer>()  // dx
                                  .Ret<ffi::Buffer<ffi::F32>>()  // d scale
                                  .Ret<ffi::Buffer<ffi::F32>>()  // d shift
                                  .Attr<float>("eps")
                                  .Attr<int64_t>("fuse"));
