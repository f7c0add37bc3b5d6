// The one C++ bridge: every call into libtorch's C++ API that tch does not expose, behind a C
// ABI that src/bridge/mod.rs declares. c10d's stores (TCPStore, FileStore, PrefixStore;
// exported by libtorch_cpu.so) and, when build.rs finds libtorch_cuda.so and the NCCL/CUDA
// headers, ProcessGroupNCCL (libtorch_cuda.so); sync BN's differentiable all-reduce (an
// autograd Function); autocast's dtype and CPU switch; the multi-tensor (foreach) and fused
// SGD kernels.
//
// Symbols are prefixed mgb_ (mg_ is the public C API). Every entry point that can fail returns
// 0 on success; on failure it writes a NUL-terminated message into the caller's (err, err_len)
// buffer and returns non-zero. No C++ exception leaves this file. Tensors arrive as
// `const at::Tensor*`: tch's `Tensor::as_ptr()` is a `torch::Tensor*` (torch-sys
// libtch/torch_api.h: `typedef torch::Tensor *tensor;`).

#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

// The differentiable all-reduce of sync BN: an autograd Function, which tch cannot define.
#include <torch/csrc/autograd/custom_function.h>
// Gradient-ready hooks on the accumulators, as DDP's reducer registers them.
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>

#ifdef MG_NCCL
// Device-generic events and stream guards (c10_cuda's implementations, reached through the
// guard registry), not their CUDA-inline twins, which would call the CUDA runtime from here.
#include <ATen/cuda/CUDAGraph.h>
#include <c10/core/Event.h>
#include <c10/core/StreamGuard.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include <optional>
#endif

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

namespace {

struct MgStore {
  c10::intrusive_ptr<c10d::Store> store;
  // The TCP port of the (underlying) TCPStore; 0 for a FileStore.
  uint16_t port;
};

void write_err(char* err, size_t len, const char* msg) {
  if (err == nullptr || len == 0) {
    return;
  }
  size_t n = std::strlen(msg);
  if (n >= len) {
    n = len - 1;
  }
  std::memcpy(err, msg, n);
  err[n] = '\0';
}

// Runs `f`, turning every exception into a message and a non-zero return.
template <typename F>
int guarded(char* err, size_t len, F&& f) noexcept {
  try {
    f();
    return 0;
  } catch (const c10::Error& e) {
    write_err(err, len, e.what_without_backtrace());
  } catch (const std::exception& e) {
    write_err(err, len, e.what());
  } catch (...) {
    write_err(err, len, "unknown C++ exception in libtorch");
  }
  return 1;
}

std::chrono::milliseconds ms(int64_t v) {
  return std::chrono::milliseconds(v);
}

// The n tensors the Rust side passed as an array of handles.
std::vector<at::Tensor> tensors_of(const at::Tensor* const* ts, size_t n) {
  std::vector<at::Tensor> v;
  v.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    v.push_back(*ts[i]);
  }
  return v;
}

}  // namespace

// Sums over a group of ranks, in place; the Rust side (the trainer's collective) provides it.
// Returns 0, or non-zero after writing a message into (err, len).
typedef int (*mgb_reduce_fn)(void* user, at::Tensor* t, char* err, size_t len);

namespace {

void call_reduce(int64_t fn, int64_t user, at::Tensor& t) {
  char err[512] = {0};
  auto f = reinterpret_cast<mgb_reduce_fn>(static_cast<intptr_t>(fn));
  if (f(reinterpret_cast<void*>(static_cast<intptr_t>(user)), &t, err, sizeof err) != 0) {
    throw std::runtime_error(std::string("sync BN all-reduce: ") + err);
  }
}

// y = sum over the group of x, whose gradient is the sum over the group of y's gradient: every
// rank's loss depends on every rank's statistics (pytorchvideo's differentiable_all_reduce).
struct AllReduceSum : public torch::autograd::Function<AllReduceSum> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            int64_t fn, int64_t user) {
    ctx->saved_data["fn"] = fn;
    ctx->saved_data["user"] = user;
    at::Tensor y = x.clone(at::MemoryFormat::Contiguous);
    call_reduce(fn, user, y);
    return y;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    at::Tensor g = grads[0].clone(at::MemoryFormat::Contiguous);
    call_reduce(ctx->saved_data["fn"].toInt(), ctx->saved_data["user"].toInt(), g);
    return {g, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

extern "C" {

// *out = a new tensor: the group's sum of *x, differentiable (see AllReduceSum). `fn` is called
// with `user` in the forward pass and again in the backward pass, on the thread that runs it.
int mgb_differentiable_all_reduce(const at::Tensor* x, mgb_reduce_fn fn, void* user,
                                 at::Tensor** out, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    at::Tensor y = AllReduceSum::apply(*x, static_cast<int64_t>(reinterpret_cast<intptr_t>(fn)),
                                       static_cast<int64_t>(reinterpret_cast<intptr_t>(user)));
    *out = new at::Tensor(std::move(y));
  });
}

// A TCPStore. `world_size` <= 0 leaves the number of workers unset. The server waits for
// `world_size` participants (itself included) when `wait_workers` is non-zero.
int mgb_store_tcp(const char* host, uint16_t port, int is_server, int64_t world_size,
                 int wait_workers, int64_t timeout_ms, void** out, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    c10d::TCPStoreOptions o;
    o.port = port;
    o.isServer = is_server != 0;
    if (world_size > 0) {
      o.numWorkers = static_cast<size_t>(world_size);
    }
    o.waitWorkers = wait_workers != 0;
    o.timeout = ms(timeout_ms);
    auto tcp = c10::make_intrusive<c10d::TCPStore>(std::string(host), o);
    uint16_t bound = tcp->getPort();
    *out = new MgStore{tcp, bound};
  });
}

int mgb_store_file(const char* path, int64_t world_size, int64_t timeout_ms, void** out,
                  char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    auto file = c10::make_intrusive<c10d::FileStore>(std::string(path),
                                                     static_cast<int>(world_size));
    file->setTimeout(ms(timeout_ms));
    *out = new MgStore{file, 0};
  });
}

int mgb_store_prefixed(void* store, const char* prefix, void** out, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    auto* s = static_cast<MgStore*>(store);
    auto p = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), s->store);
    *out = new MgStore{p, s->port};
  });
}

uint16_t mgb_store_port(void* store) {
  return static_cast<MgStore*>(store)->port;
}

void mgb_store_free(void* store) {
  try {
    delete static_cast<MgStore*>(store);
  } catch (...) {
  }
}

int mgb_store_set_timeout(void* store, int64_t timeout_ms, char* err, size_t err_len) {
  return guarded(err, err_len,
                 [&] { static_cast<MgStore*>(store)->store->setTimeout(ms(timeout_ms)); });
}

int mgb_store_set(void* store, const char* key, const uint8_t* data, size_t len, char* err,
                 size_t err_len) {
  return guarded(err, err_len, [&] {
    std::vector<uint8_t> v(data, data + len);
    static_cast<MgStore*>(store)->store->set(std::string(key), v);
  });
}

// On success *data is a malloc'd buffer (NULL when empty) that the caller frees with mgb_free.
int mgb_store_get(void* store, const char* key, uint8_t** data, size_t* len, char* err,
                 size_t err_len) {
  return guarded(err, err_len, [&] {
    std::vector<uint8_t> v = static_cast<MgStore*>(store)->store->get(std::string(key));
    *len = v.size();
    *data = nullptr;
    if (!v.empty()) {
      auto* buf = static_cast<uint8_t*>(std::malloc(v.size()));
      if (buf == nullptr) {
        throw std::bad_alloc();
      }
      std::memcpy(buf, v.data(), v.size());
      *data = buf;
    }
  });
}

void mgb_free(void* p) {
  std::free(p);
}

int mgb_store_add(void* store, const char* key, int64_t delta, int64_t* out, char* err,
                 size_t err_len) {
  return guarded(err, err_len,
                 [&] { *out = static_cast<MgStore*>(store)->store->add(std::string(key), delta); });
}

#ifdef MG_NCCL

namespace {
struct MgNccl {
  c10::intrusive_ptr<c10d::ProcessGroupNCCL> pg;
};

}  // namespace

// A ProcessGroupNCCL over `store` on cuda:`device`, its communicator created now (eagerly).
// `global_ranks` (n_global entries, may be 0) names the group's members in the whole job.
int mgb_nccl_new(void* store, int64_t rank, int64_t size, int64_t device, int64_t timeout_ms,
                const char* group_name, const uint64_t* global_ranks, size_t n_global,
                void** out, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    auto* s = static_cast<MgStore*>(store);
    auto index = static_cast<c10::DeviceIndex>(device);
    c10::cuda::set_device(index);
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = ms(timeout_ms);
    opts->group_name = std::string(group_name);
    opts->global_ranks_in_group.assign(global_ranks, global_ranks + n_global);
    auto pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(
        s->store, static_cast<int>(rank), static_cast<int>(size), opts);
    at::Device dev(at::kCUDA, index);
    pg->setBoundDeviceId(dev);
    try {
      pg->eagerConnectSingleDevice(dev);
    } catch (...) {
      try {
        pg->shutdown();
      } catch (...) {
      }
      throw;
    }
    *out = new MgNccl{pg};
  });
}

// Shuts the group down (NCCL warns or aborts when a communicator is destroyed without it),
// then frees it.
void mgb_nccl_free(void* pg) {
  auto* p = static_cast<MgNccl*>(pg);
  try {
    p->pg->shutdown();
  } catch (...) {
  }
  try {
    delete p;
  } catch (...) {
  }
}

// Sums each tensor over the group, in place: all issued, then all waited.
int mgb_nccl_all_reduce_sum(void* pg, const at::Tensor* const* ts, size_t n, char* err,
                           size_t err_len) {
  return guarded(err, err_len, [&] {
    auto& g = static_cast<MgNccl*>(pg)->pg;
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    works.reserve(n);
    std::vector<std::vector<at::Tensor>> args;
    args.reserve(n);
    c10d::AllreduceOptions o;
    o.reduceOp = c10d::ReduceOp::SUM;
    for (size_t i = 0; i < n; ++i) {
      args.push_back({*ts[i]});
      works.push_back(g->allreduce(args.back(), o));
    }
    for (auto& w : works) {
      w->wait();
    }
  });
}

// Starts summing *t over the group in place and returns at once: *work is a handle for
// mgb_work_wait (the sum runs on NCCL's stream, ordered after what is queued on the current
// one) and mgb_work_free.
int mgb_nccl_all_reduce_start(void* pg, const at::Tensor* t, void** work, char* err,
                             size_t err_len) {
  return guarded(err, err_len, [&] {
    std::vector<at::Tensor> args{*t};
    c10d::AllreduceOptions o;
    o.reduceOp = c10d::ReduceOp::SUM;
    auto w = static_cast<MgNccl*>(pg)->pg->allreduce(args, o);
    *work = new c10::intrusive_ptr<c10d::Work>(std::move(w));
  });
}

// Makes the current stream wait for the collective (the host does not wait for the device)
// and reports its failure.
int mgb_work_wait(void* work, char* err, size_t err_len) {
  return guarded(err, err_len,
                 [&] { (*static_cast<c10::intrusive_ptr<c10d::Work>*>(work))->wait(); });
}

void mgb_work_free(void* work) {
  delete static_cast<c10::intrusive_ptr<c10d::Work>*>(work);
}

int mgb_nccl_broadcast(void* pg, const at::Tensor* const* ts, size_t n, int64_t root, char* err,
                      size_t err_len) {
  return guarded(err, err_len, [&] {
    auto& g = static_cast<MgNccl*>(pg)->pg;
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    std::vector<std::vector<at::Tensor>> args;
    args.reserve(n);
    c10d::BroadcastOptions o;
    o.rootRank = root;
    o.rootTensor = 0;
    for (size_t i = 0; i < n; ++i) {
      args.push_back(tensors_of(ts + i, 1));
      works.push_back(g->broadcast(args.back(), o));
    }
    for (auto& w : works) {
      w->wait();
    }
  });
}

int mgb_nccl_barrier(void* pg, char* err, size_t err_len) {
  return guarded(err, err_len, [&] { static_cast<MgNccl*>(pg)->pg->barrier()->wait(); });
}

// `output` (world_size * input.numel() elements, contiguous) receives every rank's `input` in
// rank order.
int mgb_nccl_all_gather(void* pg, const at::Tensor* input, const at::Tensor* output, char* err,
                       size_t err_len) {
  return guarded(err, err_len, [&] {
    at::Tensor in = *input;
    at::Tensor outt = *output;
    static_cast<MgNccl*>(pg)->pg->_allgather_base(outt, in)->wait();
  });
}

// CUDA graphs: one captured training step per multigrid shape, replayed for every later step
// of that shape (torch.cuda.graph's protocol, in C++).

namespace {

// A graph, and while it is being captured, the side stream the capture runs on (capture cannot
// use the default stream) with the guard that made it current, and autocast's cache setting.
struct MgGraph {
  at::cuda::CUDAGraph graph;
  std::optional<c10::StreamGuard> guard;
  bool autocast_cache = true;
};

}  // namespace

// A memory pool id for graphs to share (torch.cuda.graph_pool_handle()).
int mgb_graph_pool(uint64_t* first, uint64_t* second, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    auto id = at::cuda::graph_pool_handle();
    *first = id.first;
    *second = id.second;
  });
}

int mgb_graph_new(void** out, char* err, size_t err_len) {
  return guarded(err, err_len, [&] { *out = new MgGraph(); });
}

void mgb_graph_free(void* graph) {
  try {
    delete static_cast<MgGraph*>(graph);
  } catch (...) {
  }
}

// Starts capturing on `device`: a side stream that first waits for the current one becomes
// current, and autocast's cast cache is off (cached casts made during capture would be freed
// when autocast exits, their memory reused inside the graph). mgb_graph_capture_end must
// follow, whatever happens in between.
int mgb_graph_capture_begin(void* graph, int64_t device, uint64_t pool_first,
                            uint64_t pool_second, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    auto* g = static_cast<MgGraph*>(graph);
    auto index = static_cast<c10::DeviceIndex>(device);
    c10::Stream current = c10::cuda::getCurrentCUDAStream(index).unwrap();
    c10::Stream side = c10::cuda::getStreamFromPool(false, index).unwrap();
    c10::Event ready(c10::DeviceType::CUDA);
    ready.record(current);
    ready.block(side);
    g->guard.emplace(side);
    g->autocast_cache = at::autocast::is_autocast_cache_enabled();
    at::autocast::set_autocast_cache_enabled(false);
    try {
      g->graph.capture_begin({pool_first, pool_second});
    } catch (...) {
      at::autocast::set_autocast_cache_enabled(g->autocast_cache);
      g->guard.reset();
      throw;
    }
  });
}

// Ends the capture (after a failed step too: CUDA then reports why the capture is invalid),
// makes the previous stream current again and has it wait for the side stream.
int mgb_graph_capture_end(void* graph, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    auto* g = static_cast<MgGraph*>(graph);
    at::autocast::set_autocast_cache_enabled(g->autocast_cache);
    c10::Stream side = c10::cuda::getCurrentCUDAStream().unwrap();
    std::exception_ptr failure;
    try {
      g->graph.capture_end();
    } catch (...) {
      failure = std::current_exception();
    }
    g->guard.reset();
    c10::Event done(c10::DeviceType::CUDA);
    done.record(side);
    done.block(c10::cuda::getCurrentCUDAStream().unwrap());
    if (failure) {
      try {
        g->graph.reset();
      } catch (...) {
      }
      std::rethrow_exception(failure);
    }
  });
}

// Runs the captured work on the current stream.
int mgb_graph_replay(void* graph, char* err, size_t err_len) {
  return guarded(err, err_len, [&] { static_cast<MgGraph*>(graph)->graph.replay(); });
}

#endif  // MG_NCCL

// Autocast as torch.autocast(device_type, dtype) enters it: the previous (enabled, dtype) of
// `device` (a c10::DeviceType) is written out for mgb_autocast_exit.
int mgb_autocast_enter(int8_t device, int8_t dtype, int* was_enabled, int8_t* was_dtype,
                       char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    auto dev = static_cast<c10::DeviceType>(device);
    bool enabled = at::autocast::is_autocast_enabled(dev);
    auto prev = at::autocast::get_autocast_dtype(dev);
    at::autocast::set_autocast_dtype(dev, static_cast<at::ScalarType>(dtype));
    at::autocast::set_autocast_enabled(dev, true);
    at::autocast::increment_nesting();
    *was_enabled = enabled ? 1 : 0;
    *was_dtype = static_cast<int8_t>(prev);
  });
}

// Leaves an autocast region: restores the state mgb_autocast_enter saw, and clears the
// cast-weight cache when the outermost region ends (the weights change at the next step).
int mgb_autocast_exit(int8_t device, int was_enabled, int8_t was_dtype, char* err,
                      size_t err_len) {
  return guarded(err, err_len, [&] {
    auto dev = static_cast<c10::DeviceType>(device);
    if (at::autocast::decrement_nesting() == 0) {
      at::autocast::clear_cache();
    }
    at::autocast::set_autocast_enabled(dev, was_enabled != 0);
    at::autocast::set_autocast_dtype(dev, static_cast<at::ScalarType>(was_dtype));
  });
}

// Whether autocast is on for `device`, and its dtype (for tests).
int mgb_autocast_state(int8_t device, int* enabled, int8_t* dtype, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    auto dev = static_cast<c10::DeviceType>(device);
    *enabled = at::autocast::is_autocast_enabled(dev) ? 1 : 0;
    *dtype = static_cast<int8_t>(at::autocast::get_autocast_dtype(dev));
  });
}

// Makes `grad` the gradient of `param` (param.grad = grad): DDP's gradient_as_bucket_view,
// where every gradient is a view into a flat bucket that autograd then accumulates into in
// place, so the bucket's all-reduce needs no copy in or out. Shape, dtype and device must match.
int mgb_set_grad(const at::Tensor* param, const at::Tensor* grad, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    TORCH_CHECK(param->sizes() == grad->sizes(), "gradient of shape ", grad->sizes(),
                " for a parameter of shape ", param->sizes());
    TORCH_CHECK(param->dtype() == grad->dtype() && param->device() == grad->device(),
                "gradient of ", grad->toString(), " on ", grad->device(), " for a parameter of ",
                param->toString(), " on ", param->device());
    // A Tensor handle shares its TensorImpl: setting the grad through a copy of the handle
    // sets it on the parameter itself.
    at::Tensor p = *param;
    p.mutable_grad() = *grad;
  });
}

// Called with the index of a parameter once its gradient has been accumulated into its .grad,
// on the thread that runs that part of backward (a CUDA device's autograd thread, or the
// caller's for the CPU). Must not throw.
typedef void (*mgb_ready_fn)(void* user, size_t index);

namespace {

// The hooks of mgb_grad_hooks_new: the accumulators are held, since autograd keeps only weak
// references to them and a new accumulator would carry no hook.
struct MgHooks {
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators;
  std::vector<uintptr_t> keys;
};

}  // namespace

// One post hook on each of n parameters' gradient accumulators (DDP's autograd_hook): fn(user,
// i) runs when the i-th parameter's gradient is ready. Each must be a leaf that requires grad.
// *out is freed by mgb_grad_hooks_free, which removes the hooks.
int mgb_grad_hooks_new(const at::Tensor* const* params, size_t n, mgb_ready_fn fn, void* user,
                       void** out, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    auto hooks = std::make_unique<MgHooks>();
    for (size_t i = 0; i < n; ++i) {
      const at::Tensor& p = *params[i];
      TORCH_CHECK(p.is_leaf() && p.requires_grad(), "parameter ", i,
                  " is not a leaf tensor that requires grad");
      auto acc = torch::autograd::impl::grad_accumulator(p);
      TORCH_CHECK(acc != nullptr, "parameter ", i, " has no gradient accumulator");
      uintptr_t key = acc->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
          [fn, user, i](const torch::autograd::variable_list& outputs,
                        const torch::autograd::variable_list&) {
            fn(user, i);
            return outputs;
          }));
      hooks->accumulators.push_back(std::move(acc));
      hooks->keys.push_back(key);
    }
    *out = hooks.release();
  });
}

void mgb_grad_hooks_free(void* hooks) {
  auto* h = static_cast<MgHooks*>(hooks);
  try {
    for (size_t i = 0; i < h->accumulators.size(); ++i) {
      h->accumulators[i]->del_post_hook(h->keys[i]);
    }
  } catch (...) {
  }
  delete h;
}

// *t = v everywhere, as a kernel on t's device (no copy from the host, so nothing waits).
int mgb_fill(const at::Tensor* t, double v, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    at::Tensor x = *t;
    x.fill_(v);
  });
}

// One torch.optim.SGD step over n parameters of one weight-decay group, as PyTorch's
// multi-tensor implementation (foreach=True) computes it, or, with `fused` and every tensor on
// CUDA, as its fused kernel (fused=True). `bufs` are the momentum buffers (ignored when
// momentum is 0), allocated by the caller in each parameter's layout; with `first_step` they
// are set to the first update direction, as torch.optim.SGD's clone of it. The grads may be
// overwritten (with nesterov and no weight decay, as PyTorch's own foreach path does). With
// `lr_t` (a 0-dim tensor on the parameters' device, else null) the learning rate is read
// from it on the device, so a captured CUDA graph follows the schedule's LR.
int mgb_sgd_step(const at::Tensor* const* params, const at::Tensor* const* grads,
                 const at::Tensor* const* bufs, size_t n, double lr, const at::Tensor* lr_t,
                 double weight_decay, double momentum, double dampening, int nesterov,
                 int first_step, int fused, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    if (n == 0) {
      return;
    }
    at::NoGradGuard no_grad;
    auto p = tensors_of(params, n);
    auto g = tensors_of(grads, n);
    std::vector<at::Tensor> b;
    if (momentum != 0.0) {
      b = tensors_of(bufs, n);
    }
    if (fused && lr_t != nullptr) {
      at::_fused_sgd_(p, g, b, weight_decay, momentum, *lr_t, dampening, nesterov != 0,
                      /*maximize=*/false, first_step != 0);
      return;
    }
    if (fused) {
      at::_fused_sgd_(p, g, b, weight_decay, momentum, lr, dampening, nesterov != 0,
                      /*maximize=*/false, first_step != 0);
      return;
    }
    std::vector<at::Tensor> d =
        weight_decay != 0.0 ? at::_foreach_add(g, p, weight_decay) : g;
    if (momentum != 0.0) {
      if (first_step) {
        at::_foreach_copy_(b, d);
      } else {
        at::_foreach_mul_(b, momentum);
        at::_foreach_add_(b, d, 1.0 - dampening);
      }
      if (nesterov) {
        at::_foreach_add_(d, b, momentum);
      } else {
        d = b;
      }
    }
    if (lr_t != nullptr) {
      at::_foreach_sub_(p, at::_foreach_mul(d, *lr_t));
    } else {
      at::_foreach_add_(p, d, -lr);
    }
  });
}

}  // extern "C"
