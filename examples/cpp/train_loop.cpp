// A C++ training loop over the multigrid plan: shapes, LR and BN groups from the plan, batches
// decoded and collated by the library, SGD steps through the trainer; then an evaluation.
//
//   g++ -std=c++17 -Wall -Wextra -Werror -I include -I bindings/cpp
//       examples/cpp/train_loop.cpp -L target/debug -lmultigrid -o train_loop
//   ./train_loop DATA_DIR RUN_DIR [STEPS]     (DATA_DIR from `multigrid gen-data --store`)
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "multigrid.hpp"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s DATA_DIR RUN_DIR [STEPS]\n", argv[0]);
    return 2;
  }
  const std::string data = argv[1], run = argv[2];
  const uint64_t steps = argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 6;
  const std::string config =
      R"({"data": {"num_frames": 8, "sampling_rate": 1, "train_jitter_scales": [34, 40],
          "train_crop_size": 32, "test_crop_size": 32, "random_flip": false},
          "train": {"batch_size": 4},
          "solver": {"base_lr": 0.05, "lr_policy": "steps_with_relative_lrs", "lrs": [1, 0.1],
                     "steps": [0, 2], "max_epoch": 3},
          "multigrid": {"long_cycle": true, "short_cycle": true,
                        "long_cycle_factors": [[0.5, 0.7071], [1, 1]]},
          "model": {"depth": 18, "width_per_group": 8, "alpha": 2, "num_classes": 12},
          "run": {"device": "cpu", "data_dir": ")" + data + R"(", "precise_bn_batches": 1,
                  "test_num_temporal_views": 1, "test_num_spatial_crops": 1}})";
  try {
    std::printf("%s\n", mg::version().c_str());
    mg::Schedule schedule(config);
    auto dataset = mg::Dataset::open_store(data + "/train.mgstore");
    mg::Plan plan(schedule, dataset.size());
    std::printf("%zu stages, %llu steps over %llu clips\n", schedule.num_stages(),
                (unsigned long long)plan.total_steps(), (unsigned long long)dataset.size());
    // Errors arrive as exceptions carrying the status and the library's message.
    try {
      plan.step(plan.total_steps());
    } catch (const mg::Error& e) {
      std::printf("past the end -> %s: %s\n", mg_status_str(e.status()), e.what());
    }

    // Rank and world size from the launcher (torchrun, mpirun, srun) or, as here, one process;
    // any field of mg::DistOptions can be set explicitly instead.
    mg::DistOptions dist;
    dist.timeout_s = 600;
    mg::Trainer trainer(config, run, dist);
    const auto [rank, world] = trainer.rank();
    std::printf("rank %u of %u\n", rank, world);
    mg::Batch batch;
    // model.alpha for SlowFast; 0 for a single-pathway model.arch, which takes the clip alone.
    const uint32_t alpha = schedule.collate_alpha();
    for (uint64_t k = 0; k < steps && k < plan.total_steps(); ++k) {
      dataset.load_step(plan, k, alpha, batch);  // the buffers are reused across shapes
      const double loss = trainer.train_step(batch, batch.step.bn_groups, batch.step.lr);
      std::printf("step %llu: %u x %u x %upx, bn_groups %u, lr %.4f, loss %.3f%s\n",
                  (unsigned long long)k, batch.step.batch_size, batch.step.num_frames,
                  batch.step.crop_size, batch.step.bn_groups, batch.step.lr, loss,
                  std::isfinite(loss) ? "" : " (not finite!)");
    }
    // Queries are const: a const Trainer& answers them.
    const mg::Trainer& view = trainer;
    std::printf("next step: %llu\n", (unsigned long long)view.next_step());
    const mg_accuracy acc = trainer.evaluate("val");
    std::printf("val: top-1 %.1f%% over %llu clips\n", acc.top1, (unsigned long long)acc.clips);

    // A progress callback that cancels: fit stops after a checkpoint.
    int calls = 0;
    const mg_summary s = trainer.fit([&](const mg_progress&) { return ++calls == 2; });
    std::printf("fit cancelled: %s after %d callbacks, %llu steps, preempted by signal %d\n",
                s.cancelled ? "yes" : "no", calls, (unsigned long long)s.steps, s.preempted);

    // The callback runs inside the trainer's fit: calling that trainer from it is refused (the
    // exception cancels the run after a checkpoint and comes out of fit).
    try {
      trainer.fit([&](const mg_progress&) { return trainer.next_step() > 0; });
    } catch (const mg::Error& e) {
      std::printf("re-entrant call -> %s: %s\n", mg_status_str(e.status()), e.what());
    }
    std::printf("next step after it: %llu\n", (unsigned long long)view.next_step());
  } catch (const mg::Error& e) {
    if (e.status() == MG_STATUS_UNSUPPORTED) {
      std::printf("this libmultigrid has no trainer (built without libtorch)\n");
      return 0;
    }
    std::fprintf(stderr, "error (%s): %s\n", mg_status_str(e.status()), e.what());
    return 1;
  }
  return 0;
}
