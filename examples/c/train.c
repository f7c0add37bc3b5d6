/*
 * Trains the tiny SlowFast on the synthetic dataset through the C API: five steps driven by
 * the plan (shape, LR and BN groups from mg_plan_step, the batch from mg_dataset_load_step),
 * an evaluation, a checkpoint, then mg_trainer_fit with a progress callback that cancels after
 * three steps (a success: the summary says it stopped early).
 *
 *   multigrid gen-data --out /tmp/syn --clips 100 --frames 16 --size 40 --store --no-videos
 *   cc -std=c11 -Iinclude examples/c/train.c -Ltarget/release -lmultigrid -o train
 *   ./train /tmp/syn /tmp/train-run
 *
 * Compiles as C11 and as C++.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "multigrid.h"

static int fail(const char *what, mg_status status) {
  char msg[512];
  mg_last_error_message(msg, sizeof msg);
  fprintf(stderr, "%s failed: %s: %s\n", what, mg_status_str(status), msg);
  return 1;
}

static int32_t on_progress(void *user_data, const mg_progress *p) {
  int *calls = (int *)user_data;
  printf("progress: step %llu/%llu loss %.3f\n", (unsigned long long)p->step + 1,
         (unsigned long long)p->total_steps, p->loss);
  return ++*calls >= 3; /* non-zero: stop after a checkpoint */
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s DATA_DIR OUTPUT_DIR\n", argv[0]);
    return 2;
  }
  char config[2048];
  snprintf(config, sizeof config,
           "{\"data\": {\"num_frames\": 8, \"sampling_rate\": 1, \"train_jitter_scales\": [34, 40],"
           " \"train_crop_size\": 32, \"test_crop_size\": 32, \"random_flip\": false},"
           " \"train\": {\"batch_size\": 4},"
           " \"solver\": {\"base_lr\": 0.05, \"lr_policy\": \"cosine\", \"max_epoch\": 2},"
           " \"model\": {\"depth\": 18, \"width_per_group\": 8, \"alpha\": 2, \"num_classes\": 12},"
           " \"run\": {\"device\": \"cpu\", \"data_dir\": \"%s\", \"precise_bn_batches\": 1,"
           " \"test_num_temporal_views\": 1, \"test_num_spatial_crops\": 1}}",
           argv[1]);
  int rc = 1;
  mg_trainer *trainer = NULL;
  mg_schedule *schedule = NULL;
  mg_plan *plan = NULL;
  mg_dataset *dataset = NULL;
  float *slow = NULL, *fast = NULL;
  int64_t *labels = NULL;
  uint64_t n = 0;
  mg_status st;
  char path[1024];

  printf("%s\n", mg_version());
  snprintf(path, sizeof path, "%s/train.mgstore", argv[1]);
  if ((st = mg_dataset_open_store(path, &dataset)) != MG_STATUS_OK) return fail("mg_dataset_open_store", st);
  if ((st = mg_dataset_len(dataset, &n)) != MG_STATUS_OK) { fail("mg_dataset_len", st); goto done; }
  if ((st = mg_schedule_new(config, &schedule)) != MG_STATUS_OK) { fail("mg_schedule_new", st); goto done; }
  if ((st = mg_plan_new(schedule, n, 1, 0, 0, &plan)) != MG_STATUS_OK) { fail("mg_plan_new", st); goto done; }
  /* One process here; under torchrun, mpirun or srun the defaults take the rank and world
   * size from the launcher, and every rank runs this same program. */
  mg_dist_options dist;
  /* sizeof: the struct as this program knows it, so an older or newer library reads it right. */
  if ((st = mg_dist_options_default(&dist, sizeof dist)) != MG_STATUS_OK) { fail("mg_dist_options_default", st); goto done; }
  dist.timeout_s = 600;
  st = mg_trainer_new_dist(config, argv[2], &dist, &trainer);
  if (st == MG_STATUS_UNSUPPORTED) {
    printf("this libmultigrid has no trainer (built without libtorch)\n");
    rc = 0;
    goto done;
  }
  if (st != MG_STATUS_OK) { fail("mg_trainer_new_dist", st); goto done; }
  {
    uint32_t rank = 0, world = 0;
    if ((st = mg_trainer_rank(trainer, &rank, &world)) != MG_STATUS_OK) { fail("mg_trainer_rank", st); goto done; }
    printf("rank %u of %u\n", rank, world);
  }

  for (uint64_t k = 0; k < 5; k++) {
    mg_step step;
    size_t slow_len, fast_len;
    double loss = 0;
    if ((st = mg_plan_step(plan, k, &step)) != MG_STATUS_OK) { fail("mg_plan_step", st); goto done; }
    if ((st = mg_collate_step_len(plan, k, 2, &slow_len, &fast_len)) != MG_STATUS_OK) { fail("mg_collate_step_len", st); goto done; }
    slow = (float *)realloc(slow, slow_len * sizeof *slow);
    fast = (float *)realloc(fast, fast_len * sizeof *fast);
    labels = (int64_t *)realloc(labels, step.batch_size * sizeof *labels);
    if (!slow || !fast || !labels) goto done;
    st = mg_dataset_load_step(dataset, plan, k, 2, slow, slow_len, fast, fast_len, labels, step.batch_size);
    if (st != MG_STATUS_OK) { fail("mg_dataset_load_step", st); goto done; }
    int64_t slow_shape[5] = {step.batch_size, 3, step.num_frames / 2, step.crop_size, step.crop_size};
    int64_t fast_shape[5] = {step.batch_size, 3, step.num_frames, step.crop_size, step.crop_size};
    /* The last step leaves BN groups (0) and LR (< 0) to the plan, at the trainer's position. */
    int from_plan = k == 4;
    st = mg_trainer_train_step(trainer, slow, slow_shape, fast, fast_shape, labels,
                               from_plan ? 0 : step.bn_groups, from_plan ? -1.0 : step.lr, &loss);
    if (st != MG_STATUS_OK) { fail("mg_trainer_train_step", st); goto done; }
    printf("step %llu: batch %u x %u x %u, lr %.4f, loss %.3f%s\n", (unsigned long long)k,
           (unsigned)step.batch_size, (unsigned)step.num_frames, (unsigned)step.crop_size, step.lr, loss,
           isfinite(loss) ? "" : " (not finite!)");
  }

  {
    uint64_t next = 0;
    const mg_trainer *view = trainer; /* queries take a const trainer */
    if ((st = mg_trainer_next_step(view, &next)) != MG_STATUS_OK) { fail("mg_trainer_next_step", st); goto done; }
    printf("next step: %llu\n", (unsigned long long)next);
    mg_accuracy acc;
    if ((st = mg_trainer_evaluate(trainer, "val", &acc)) != MG_STATUS_OK) { fail("mg_trainer_evaluate", st); goto done; }
    printf("val: top-1 %.1f%% top-5 %.1f%% over %llu clips\n", acc.top1, acc.top5, (unsigned long long)acc.clips);
    if ((st = mg_trainer_save(trainer)) != MG_STATUS_OK) { fail("mg_trainer_save", st); goto done; }
    int calls = 0;
    mg_summary summary;
    summary.struct_size = sizeof summary; /* the library writes the fields it and we both know */
    st = mg_trainer_fit(trainer, on_progress, &calls, &summary);
    if (st != MG_STATUS_OK) { fail("mg_trainer_fit", st); goto done; }
    printf("fit -> %s after %d callbacks: %s at step %llu\n", mg_status_str(st), calls,
           summary.cancelled ? "cancelled" : "finished", (unsigned long long)summary.steps);
    char metrics[1024];
    size_t full = mg_trainer_last_metrics(trainer, metrics, sizeof metrics);
    printf("last metrics: %s\n", full > 0 ? "present" : "missing");
  }
  rc = 0;

done:
  free(slow);
  free(fast);
  free(labels);
  mg_trainer_free(trainer);
  mg_plan_free(plan);
  mg_schedule_free(schedule);
  mg_dataset_free(dataset);
  return rc;
}
