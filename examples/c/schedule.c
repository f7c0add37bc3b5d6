/*
 * Prints the Kinetics-400 multigrid plan through the C API: the stage table, the LR at a few
 * epochs, the first steps of rank 0 of 8 with their dataset indices, and what a bad config
 * reports.
 *
 *   cc -std=c11 -Iinclude examples/c/schedule.c -Ltarget/release -lmultigrid -o schedule
 *   ./schedule configs/kinetics_slowfast_8x8_r50_multigrid.json 240000
 *
 * Compiles as C11 and as C++.
 */
#include <stdio.h>
#include <stdlib.h>

#include "multigrid.h"

/* Prints the failing call, its status and this thread's last error message; returns 1. */
static int fail(const char *what, mg_status status) {
  char msg[512];
  size_t full = mg_last_error_message(msg, sizeof msg);
  fprintf(stderr, "%s failed: %s: %s%s\n", what, mg_status_str(status), msg,
          full >= sizeof msg ? "..." : "");
  return 1;
}

static char *read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  if (fseek(f, 0, SEEK_END) != 0) { fclose(f); return NULL; }
  long size = ftell(f);
  if (size < 0 || fseek(f, 0, SEEK_SET) != 0) { fclose(f); return NULL; }
  char *text = (char *)malloc((size_t)size + 1);
  if (text && fread(text, 1, (size_t)size, f) != (size_t)size) { free(text); text = NULL; }
  if (text) text[size] = '\0';
  fclose(f);
  return text;
}

int main(int argc, char **argv) {
  const char *path = argc > 1 ? argv[1] : "configs/kinetics_slowfast_8x8_r50_multigrid.json";
  uint64_t dataset_size = argc > 2 ? strtoull(argv[2], NULL, 10) : 240000;
  const uint32_t world_size = 8;
  int rc = 1;
  mg_schedule *schedule = NULL;
  mg_plan *plan = NULL;
  uint64_t *indices = NULL;
  size_t num_stages = 0;
  uint32_t max_epoch = 0;
  uint64_t total = 0;
  mg_status st;

  printf("%s (header %d.%d.%d)\n", mg_version(), MG_VERSION_MAJOR, MG_VERSION_MINOR,
         MG_VERSION_PATCH);
  char *json = read_file(path);
  if (!json) {
    fprintf(stderr, "cannot read %s\n", path);
    return 1;
  }
  st = mg_schedule_new(json, &schedule);
  free(json);
  if (st != MG_STATUS_OK) return fail("mg_schedule_new", st);

  if ((st = mg_schedule_num_stages(schedule, &num_stages)) != MG_STATUS_OK) { fail("mg_schedule_num_stages", st); goto done; }
  if ((st = mg_schedule_max_epoch(schedule, &max_epoch)) != MG_STATUS_OK) { fail("mg_schedule_max_epoch", st); goto done; }
  printf("%zu stages, %u epochs\n", num_stages, (unsigned)max_epoch);
  printf("stage lr_stage epochs    b  T   S  lr        batch/gpu\n");
  for (size_t i = 0; i < num_stages; i++) {
    mg_stage s;
    double lr = 0.0;
    if ((st = mg_schedule_stage(schedule, i, &s)) != MG_STATUS_OK) { fail("mg_schedule_stage", st); goto done; }
    /* The LR once warm-up is over: sample the stage's last epoch. */
    if ((st = mg_schedule_lr_at(schedule, (double)s.end_epoch - 0.5, &lr)) != MG_STATUS_OK) { fail("mg_schedule_lr_at", st); goto done; }
    printf("%5zu %8u %3u-%-3u %3u %3u %3u  %-8.4g", i, (unsigned)s.lr_stage, (unsigned)s.start_epoch,
           (unsigned)s.end_epoch, (unsigned)s.batch_factor, (unsigned)s.num_frames,
           (unsigned)s.crop_size, lr);
    for (uint32_t p = 0; p < s.num_short_cycle_phases; p++)
      printf(" %u@%u", (unsigned)(s.short_cycle_batch_factors[p] * s.base_batch_size / world_size),
             (unsigned)s.short_cycle_crops[p]);
    printf("\n");
  }

  st = mg_plan_new(schedule, dataset_size, world_size, 0, 0, &plan);
  if (st != MG_STATUS_OK) { fail("mg_plan_new", st); goto done; }
  if ((st = mg_plan_total_steps(plan, &total)) != MG_STATUS_OK) { fail("mg_plan_total_steps", st); goto done; }
  printf("total steps (rank 0 of %u, %llu clips): %llu\n", (unsigned)world_size,
         (unsigned long long)dataset_size, (unsigned long long)total);

  for (uint64_t k = 0; k < 3; k++) {
    mg_step step;
    size_t n = 0;
    if ((st = mg_plan_step(plan, k, &step)) != MG_STATUS_OK) { fail("mg_plan_step", st); goto done; }
    /* Ask for the length first, then fill a buffer of exactly that size. */
    st = mg_plan_step_indices(plan, k, NULL, 0, &n);
    if (st != MG_STATUS_BUFFER_TOO_SMALL) { fail("mg_plan_step_indices (size query)", st); goto done; }
    free(indices);
    indices = (uint64_t *)malloc(n * sizeof *indices);
    if (!indices) goto done;
    if ((st = mg_plan_step_indices(plan, k, indices, n, &n)) != MG_STATUS_OK) { fail("mg_plan_step_indices", st); goto done; }
    printf("step %llu: epoch %u iter %llu phase %u batch %u x %u frames x %upx, stride %u-%u, "
           "bn_groups %u, lr %.6f, indices %llu %llu %llu ...\n",
           (unsigned long long)step.step, (unsigned)step.epoch, (unsigned long long)step.iteration,
           (unsigned)step.short_cycle_phase, (unsigned)step.batch_size, (unsigned)step.num_frames,
           (unsigned)step.crop_size, (unsigned)step.sampling_rate_min, (unsigned)step.sampling_rate_max,
           (unsigned)step.bn_groups, step.lr, (unsigned long long)indices[0],
           (unsigned long long)indices[1], (unsigned long long)indices[2]);
  }

  /* Errors are values: a step past the end and a bad config. */
  {
    mg_step step;
    st = mg_plan_step(plan, total, &step);
    printf("step past the end -> %s\n", mg_status_str(st));
    mg_schedule *bad = NULL;
    st = mg_schedule_new("{\"data\": {\"num_frames\": 0}}", &bad);
    char msg[256];
    mg_last_error_message(msg, sizeof msg);
    printf("bad config -> %s: %s\n", mg_status_str(st), msg);
    mg_schedule_free(bad); /* still NULL: free accepts it */
  }
  rc = 0;

done:
  free(indices);
  mg_plan_free(plan);
  mg_schedule_free(schedule);
  return rc;
}
