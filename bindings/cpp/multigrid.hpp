// multigrid.hpp: header-only C++17 bindings over the C API of include/multigrid.h.
//
// - Handles are move-only RAII objects (std::unique_ptr with the C free functions).
// - Every failing call throws mg::Error, which carries the mg_status and the library's message
//   (it names the argument, key or value that was wrong).
// - Buffers are std::vector or pointer + length; nothing here allocates behind your back except
//   the std::vector overloads.
// - Threads: as the C API (see the header's preamble). A Trainer's const methods may run
//   together on several threads; any other call needs the Trainer to itself, and a fit's
//   progress callback must not call its own Trainer (that throws mg::Error, MG_STATUS_BUSY).
//
// Link with -lmultigrid (pkg-config multigrid, or CMake's multigrid::shared).
#ifndef MULTIGRID_HPP
#define MULTIGRID_HPP

#include <array>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "multigrid.h"

namespace mg {

/// A failed call: status() is the mg_status, what() names the function and the cause.
class Error : public std::runtime_error {
 public:
  Error(mg_status status, const std::string& message)
      : std::runtime_error(message), status_(status) {}
  mg_status status() const noexcept { return status_; }

 private:
  mg_status status_;
};

namespace detail {

inline std::string last_error() {
  size_t n = mg_last_error_message(nullptr, 0);
  std::string s(n, '\0');
  if (n > 0) mg_last_error_message(&s[0], n + 1);
  return s;
}

inline void check(mg_status status) {
  if (status != MG_STATUS_OK) {
    std::string msg = last_error();
    if (msg.empty()) msg = mg_status_str(status);
    throw Error(status, msg);
  }
}

template <typename T, void (*Free)(T*)>
struct Deleter {
  void operator()(T* p) const noexcept { Free(p); }
};

}  // namespace detail

/// "multigrid X.Y.Z (libtorch ..., CUDA linked|not linked)".
inline std::string version() { return mg_version(); }

/// `config_json` with `SECTION.KEY=VALUE` overrides applied in order (the CLI's `--set`; keys
/// case-insensitive, VALUE JSON or else a string): the config, every key spelled out.
inline std::string apply_overrides(const std::string& config_json,
                                   const std::vector<std::string>& sets) {
  std::vector<const char*> ptrs;
  for (const auto& s : sets) ptrs.push_back(s.c_str());
  size_t len = 0;
  mg_status st = mg_config_apply_overrides(config_json.c_str(), ptrs.data(), ptrs.size(), nullptr,
                                           0, &len);
  if (st != MG_STATUS_BUFFER_TOO_SMALL) detail::check(st);
  std::string out(len + 1, '\0');
  detail::check(mg_config_apply_overrides(config_json.c_str(), ptrs.data(), ptrs.size(), &out[0],
                                          out.size(), &len));
  out.resize(len);
  return out;
}

/// SIGTERM and SIGUSR1 become preemption notices: a running Trainer::fit checkpoints and returns
/// with `preempted` set (mg_preemption_install).
inline void install_preemption() { detail::check(mg_preemption_install()); }

/// The multigrid schedule of a config (JSON text with PySlowFast's section and key names).
class Schedule {
 public:
  explicit Schedule(const std::string& config_json) {
    mg_schedule* s = nullptr;
    detail::check(mg_schedule_new(config_json.c_str(), &s));
    handle_.reset(s);
  }
  size_t num_stages() const {
    size_t n = 0;
    detail::check(mg_schedule_num_stages(get(), &n));
    return n;
  }
  mg_stage stage(size_t index) const {
    mg_stage s{};
    detail::check(mg_schedule_stage(get(), index, &s));
    return s;
  }
  std::vector<mg_stage> stages() const {
    std::vector<mg_stage> v;
    for (size_t i = 0, n = num_stages(); i < n; ++i) v.push_back(stage(i));
    return v;
  }
  uint32_t max_epoch() const {
    uint32_t e = 0;
    detail::check(mg_schedule_max_epoch(get(), &e));
    return e;
  }
  /// The alpha collation takes for the config's network: model.alpha for SlowFast, 0 for a
  /// single-pathway model.arch (no slow pathway is packed; train_step takes slow nullptr).
  uint32_t collate_alpha() const {
    uint32_t a = 0;
    detail::check(mg_schedule_collate_alpha(get(), &a));
    return a;
  }
  double lr_at(double epoch) const {
    double lr = 0;
    detail::check(mg_schedule_lr_at(get(), epoch, &lr));
    return lr;
  }
  bool is_eval_epoch(uint32_t epoch) const {
    bool b = false;
    detail::check(mg_schedule_is_eval_epoch(get(), epoch, &b));
    return b;
  }
  const mg_schedule* get() const noexcept { return handle_.get(); }

 private:
  std::unique_ptr<mg_schedule, detail::Deleter<mg_schedule, mg_schedule_free>> handle_;
};

/// Steps of one rank: shape, LR, BN groups and dataset indices of any step, O(1)-ish each.
class Plan {
 public:
  Plan(const Schedule& schedule, uint64_t dataset_size, uint32_t world_size = 1,
       uint32_t rank = 0, uint64_t seed = 0) {
    mg_plan* p = nullptr;
    detail::check(mg_plan_new(schedule.get(), dataset_size, world_size, rank, seed, &p));
    handle_.reset(p);
  }
  uint64_t total_steps() const {
    uint64_t n = 0;
    detail::check(mg_plan_total_steps(get(), &n));
    return n;
  }
  uint64_t steps_in_epoch(uint32_t epoch) const {
    uint64_t n = 0;
    detail::check(mg_plan_steps_in_epoch(get(), epoch, &n));
    return n;
  }
  mg_step step(uint64_t step) const {
    mg_step s{};
    detail::check(mg_plan_step(get(), step, &s));
    return s;
  }
  /// Writes this rank's dataset indices of `step` into buf; returns how many.
  size_t indices(uint64_t step, uint64_t* buf, size_t capacity) const {
    size_t len = 0;
    detail::check(mg_plan_step_indices(get(), step, buf, capacity, &len));
    return len;
  }
  std::vector<uint64_t> indices(uint64_t step) const {
    std::vector<uint64_t> v(this->step(step).batch_size);
    v.resize(indices(step, v.data(), v.size()));
    return v;
  }
  const mg_plan* get() const noexcept { return handle_.get(); }

 private:
  std::unique_ptr<mg_plan, detail::Deleter<mg_plan, mg_plan_free>> handle_;
};

/// Float counts of the slow and fast pathway buffers of a plan step (slow is 0 for alpha 0).
struct BatchLen {
  size_t slow = 0;
  size_t fast = 0;
};

/// A collated batch: [N, 3, T/alpha, S, S], [N, 3, T, S, S] and N labels.
struct Batch {
  std::vector<float> slow;
  std::vector<float> fast;
  std::vector<int64_t> labels;
  mg_step step{};
  std::array<int64_t, 5> slow_shape() const {
    const size_t per_frame = 3ull * step.batch_size * step.crop_size * step.crop_size;
    const int64_t frames = per_frame == 0 ? 0 : int64_t(slow.size() / per_frame);
    return {step.batch_size, 3, frames, step.crop_size, step.crop_size};
  }
  std::array<int64_t, 5> fast_shape() const {
    return {step.batch_size, 3, step.num_frames, step.crop_size, step.crop_size};
  }
};

inline BatchLen collate_step_len(const Plan& plan, uint64_t step, uint32_t alpha) {
  BatchLen n;
  detail::check(mg_collate_step_len(plan.get(), step, alpha, &n.slow, &n.fast));
  return n;
}

/// PySlowFast's DATA.MEAN and DATA.STD, the config's defaults (mg_default_normalization).
inline std::array<float, 3> default_mean() {
  std::array<float, 3> mean{}, std{};
  detail::check(mg_default_normalization(mean.data(), std.data()));
  return mean;
}
inline std::array<float, 3> default_std() {
  std::array<float, 3> mean{}, std{};
  detail::check(mg_default_normalization(mean.data(), std.data()));
  return std;
}

/// Collates decoded clips (uint8 HWC frames) with explicit parameters into out [N, 3, T, S, S].
inline void collate_explicit(const std::vector<mg_clip>& clips,
                             const std::vector<mg_clip_params>& params, uint32_t num_frames,
                             uint32_t crop_size, const std::array<float, 3>& mean,
                             const std::array<float, 3>& std, float* out, size_t out_len) {
  if (clips.size() != params.size())
    throw Error(MG_STATUS_INVALID_ARGUMENT, "collate_explicit: clips and params differ in length");
  detail::check(mg_collate_explicit(clips.data(), params.data(), clips.size(), num_frames,
                                    crop_size, mean.data(), std.data(), out, out_len));
}

inline std::vector<float> collate_explicit(const std::vector<mg_clip>& clips,
                                           const std::vector<mg_clip_params>& params,
                                           uint32_t num_frames, uint32_t crop_size,
                                           const std::array<float, 3>& mean = default_mean(),
                                           const std::array<float, 3>& std = default_std()) {
  std::vector<float> out(clips.size() * 3ull * num_frames * crop_size * crop_size);
  collate_explicit(clips, params, num_frames, crop_size, mean, std, out.data(), out.size());
  return out;
}

/// Collates a plan step's clips with the plan's seeded augmentation.
inline void collate_step(const Plan& plan, uint64_t step, const std::vector<mg_clip>& clips,
                         uint32_t alpha, float* slow, size_t slow_len, float* fast,
                         size_t fast_len) {
  detail::check(mg_collate_step(plan.get(), step, clips.data(), clips.size(), alpha, slow,
                                slow_len, fast, fast_len));
}

inline void set_collate_threads(size_t n) { detail::check(mg_collate_set_num_threads(n)); }

/// A clip store (.mgstore), a frame store of JPEG frames (.mgframes), a PySlowFast video list,
/// or Charades' or SSv2's frame lists, read by plan steps.
class Dataset {
 public:
  static Dataset open_store(const std::string& path) {
    mg_dataset* d = nullptr;
    detail::check(mg_dataset_open_store(path.c_str(), &d));
    return Dataset(d);
  }
  static Dataset open_video_list(const std::string& dir, const std::string& split) {
    mg_dataset* d = nullptr;
    detail::check(mg_dataset_open_video_list(dir.c_str(), split.c_str(), &d));
    return Dataset(d);
  }
  /// `dataset` "charades" or "ssv2"; val and test both read val.csv, as in PySlowFast.
  static Dataset open_frame_lists(const std::string& dataset, const std::string& dir,
                                  const std::string& split, const std::string& path_prefix = "") {
    mg_dataset* d = nullptr;
    detail::check(mg_dataset_open_frame_lists(dataset.c_str(), dir.c_str(), split.c_str(),
                                              path_prefix.c_str(), &d));
    return Dataset(d);
  }
  uint64_t size() const {
    uint64_t n = 0;
    detail::check(mg_dataset_len(get(), &n));
    return n;
  }
  void load_step(const Plan& plan, uint64_t step, uint32_t alpha, float* slow, size_t slow_len,
                 float* fast, size_t fast_len, int64_t* labels, size_t labels_len) const {
    detail::check(mg_dataset_load_step(get(), plan.get(), step, alpha, slow, slow_len, fast,
                                       fast_len, labels, labels_len));
  }
  /// Decodes and collates plan step `step` into `batch`, reusing its buffers.
  void load_step(const Plan& plan, uint64_t step, uint32_t alpha, Batch& batch) const {
    batch.step = plan.step(step);
    BatchLen n = collate_step_len(plan, step, alpha);
    batch.slow.resize(n.slow);
    batch.fast.resize(n.fast);
    batch.labels.resize(batch.step.batch_size);
    load_step(plan, step, alpha, batch.slow.data(), batch.slow.size(), batch.fast.data(),
              batch.fast.size(), batch.labels.data(), batch.labels.size());
  }
  /// A multi-label plan's step (data.multi_label): multi-hot `targets`, N x num_classes floats.
  void load_step_targets(const Plan& plan, uint64_t step, uint32_t alpha, float* slow,
                         size_t slow_len, float* fast, size_t fast_len, float* targets,
                         size_t targets_len) const {
    detail::check(mg_dataset_load_step_targets(get(), plan.get(), step, alpha, slow, slow_len,
                                               fast, fast_len, targets, targets_len));
  }
  Batch load_step(const Plan& plan, uint64_t step, uint32_t alpha) const {
    Batch b;
    load_step(plan, step, alpha, b);
    return b;
  }
  const mg_dataset* get() const noexcept { return handle_.get(); }

 private:
  explicit Dataset(mg_dataset* d) : handle_(d) {}
  std::unique_ptr<mg_dataset, detail::Deleter<mg_dataset, mg_dataset_free>> handle_;
};

/// Distributed settings of one rank (mg_dist_options). Empty strings and -1 leave a field to
/// the config's run section and the launcher's environment (torchrun, mpirun, srun).
struct DistOptions {
  std::string backend;      ///< "auto", "nccl" or "mpi"
  std::string init_method;  ///< "env://", "tcp://HOST:PORT" or "file:///PATH"
  int32_t rank = -1;
  int32_t world_size = -1;
  int32_t local_rank = -1;
  int32_t local_world_size = -1;
  double timeout_s = 0;  ///< <= 0: run.dist_timeout_s
};

/// SlowFast trained on libtorch over a whole multigrid schedule (CUDA when present). Under a
/// launcher (torchrun, mpirun, srun) each process is one rank of a data-parallel job; every
/// rank makes the same calls in the same order.
class Trainer {
 public:
  /// Return true to cancel: fit stops after a checkpoint and reports cancelled.
  using Progress = std::function<bool(const mg_progress&)>;

  Trainer(const std::string& config_json, const std::string& output_dir) {
    mg_trainer* t = nullptr;
    detail::check(mg_trainer_new(config_json.c_str(), output_dir.c_str(), &t));
    handle_.reset(t);
  }
  Trainer(const std::string& config_json, const std::string& output_dir,
          const DistOptions& dist) {
    mg_dist_options o{};
    detail::check(mg_dist_options_default(&o, sizeof o));
    if (!dist.backend.empty()) o.backend = dist.backend.c_str();
    if (!dist.init_method.empty()) o.init_method = dist.init_method.c_str();
    o.rank = dist.rank;
    o.world_size = dist.world_size;
    o.local_rank = dist.local_rank;
    o.local_world_size = dist.local_world_size;
    o.timeout_s = dist.timeout_s;
    mg_trainer* t = nullptr;
    detail::check(mg_trainer_new_dist(config_json.c_str(), output_dir.c_str(), &o, &t));
    handle_.reset(t);
  }
  /// This process's rank and the number of ranks.
  std::pair<uint32_t, uint32_t> rank() const {
    uint32_t r = 0, w = 0;
    detail::check(mg_trainer_rank(get(), &r, &w));
    return {r, w};
  }
  /// Loads the newest checkpoint in the output directory; false when there is none.
  bool resume() {
    bool r = false;
    detail::check(mg_trainer_resume(get(), &r));
    return r;
  }
  uint64_t next_step() const {
    uint64_t s = 0;
    detail::check(mg_trainer_next_step(get(), &s));
    return s;
  }
  /// Trains to the end of the plan; a run stopped early (by `progress`, or a preemption notice)
  /// returns too, with `cancelled` (and `preempted`) set. An exception thrown by `progress`
  /// cancels the run at that step (a checkpoint is written) and is rethrown here. `progress`
  /// must not call this Trainer: such a call throws mg::Error with MG_STATUS_BUSY.
  mg_summary fit(const Progress& progress = nullptr) {
    struct Ctx {
      const Progress* f;
      std::exception_ptr error;
    } ctx{&progress, nullptr};
    auto trampoline = [](void* user, const mg_progress* p) -> int32_t {
      auto* c = static_cast<Ctx*>(user);
      try {
        return (*c->f)(*p) ? 1 : 0;
      } catch (...) {
        c->error = std::current_exception();
        return 1;
      }
    };
    mg_summary s{};
    s.struct_size = sizeof s;
    fitting_ = true;
    mg_status st = mg_trainer_fit(get(), progress ? +trampoline : nullptr, &ctx, &s);
    fitting_ = false;
    if (ctx.error) std::rethrow_exception(ctx.error);
    detail::check(st);
    return s;
  }
  /// One SGD step on a host batch; bn_groups 0 and lr < 0 take the plan's values. A
  /// single-pathway network (Schedule::collate_alpha() 0) takes `slow` nullptr.
  double train_step(const float* slow, const std::array<int64_t, 5>& slow_shape,
                    const float* fast, const std::array<int64_t, 5>& fast_shape,
                    const int64_t* labels, uint32_t bn_groups = 0, double lr = -1.0) {
    double loss = 0;
    detail::check(mg_trainer_train_step(get(), slow, slow ? slow_shape.data() : nullptr, fast,
                                        fast_shape.data(), labels, bn_groups, lr, &loss));
    return loss;
  }
  double train_step(const Batch& b, uint32_t bn_groups = 0, double lr = -1.0) {
    return train_step(b.slow.empty() ? nullptr : b.slow.data(), b.slow_shape(), b.fast.data(),
                      b.fast_shape(), b.labels.data(), bn_groups, lr);
  }
  /// A multi-label step: `targets` N x num_classes floats in [0, 1]; returns the BCE loss.
  double train_step_targets(const float* slow, const std::array<int64_t, 5>& slow_shape,
                            const float* fast, const std::array<int64_t, 5>& fast_shape,
                            const float* targets, uint32_t num_classes, uint32_t bn_groups = 0,
                            double lr = -1.0) {
    double loss = 0;
    detail::check(mg_trainer_train_step_targets(get(), slow, slow ? slow_shape.data() : nullptr, fast,
                                                fast_shape.data(), targets, num_classes,
                                                bn_groups, lr, &loss));
    return loss;
  }
  mg_accuracy evaluate(const std::string& split = "val") {
    mg_accuracy a{};
    detail::check(mg_trainer_evaluate(get(), split.c_str(), &a));
    return a;
  }
  void save() { detail::check(mg_trainer_save(get())); }
  /// Initialises the model from another run's weights (mg_trainer_init_from); returns what
  /// was loaded (mg_trainer_init_report, JSON).
  std::string init_from(const std::string& path, bool skip_missing = false) {
    detail::check(
        mg_trainer_init_from(get(), path.c_str(), skip_missing ? MG_INIT_SKIP_MISSING : 0));
    std::string report(mg_trainer_init_report(get(), nullptr, 0) + 1, '\0');
    report.resize(mg_trainer_init_report(get(), report.data(), report.size()));
    return report;
  }
  void load(const std::string& checkpoint_dir) {
    detail::check(mg_trainer_load(get(), checkpoint_dir.c_str()));
  }
  /// The last metrics line (JSON); empty when nothing was logged. Throws MG_STATUS_BUSY inside
  /// this Trainer's fit, where the C call could only return 0, as for "nothing logged".
  std::string last_metrics() const {
    if (fitting_)
      throw Error(MG_STATUS_BUSY, "Trainer::last_metrics: called inside this Trainer's fit");
    size_t n = mg_trainer_last_metrics(handle_.get(), nullptr, 0);
    std::string s(n, '\0');
    if (n > 0) mg_trainer_last_metrics(handle_.get(), &s[0], n + 1);
    return s;
  }
  mg_trainer* get() noexcept { return handle_.get(); }
  const mg_trainer* get() const noexcept { return handle_.get(); }

 private:
  std::unique_ptr<mg_trainer, detail::Deleter<mg_trainer, mg_trainer_free>> handle_;
  bool fitting_ = false;
};

}  // namespace mg

#endif  // MULTIGRID_HPP
