/*
 * Drives every failure that include/multigrid.h's preamble documents through the C API and
 * checks the status it returns, that a message names it, and that out-parameters keep their
 * values. tests/c_failures.rs compiles it with AddressSanitizer and UBSan, runs it, and checks
 * that every (function, status) pair of the preamble has an EXPECT line here.
 *
 *   ./failures DATA_DIR SCRATCH_DIR     (DATA_DIR: multigrid gen-data --store --no-videos)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "multigrid.h"

static int cases = 0;
static int failed = 0;

static void check(const char *call, mg_status got, mg_status want, int line) {
  cases++;
  char msg[1024];
  size_t n = mg_last_error_message(msg, sizeof msg);
  if (got != want) {
    fprintf(stderr, "line %d: %s\n  returned %s, want %s (%s)\n", line, call, mg_status_str(got),
            mg_status_str(want), n ? msg : "no message");
    failed++;
  } else if (want != MG_STATUS_OK && n == 0) {
    fprintf(stderr, "line %d: %s returned %s with no message\n", line, call, mg_status_str(got));
    failed++;
  }
}

/* EXPECT(MG_STATUS_X, mg_function(...)): the call returns exactly that status. */
#define EXPECT(want, call) check(#call, (call), (want), __LINE__)
/* The thread's last error message contains `text`. */
#define MESSAGE_HAS(text) message_has((text), __LINE__)

static void message_has(const char *text, int line) {
  cases++;
  char msg[1024];
  mg_last_error_message(msg, sizeof msg);
  if (!strstr(msg, text)) {
    fprintf(stderr, "line %d: the last error does not say \"%s\": %s\n", line, text, msg);
    failed++;
  }
}
/* Out-parameters are written only on success. */
#define UNTOUCHED(cond)                                                   \
  do {                                                                    \
    cases++;                                                              \
    if (!(cond)) {                                                        \
      fprintf(stderr, "line %d: an output was written: %s\n", __LINE__, #cond); \
      failed++;                                                           \
    }                                                                     \
  } while (0)

static const char *TINY =
    "{\"data\": {\"num_frames\": 8, \"sampling_rate\": 1, \"train_jitter_scales\": [34, 40],"
    " \"train_crop_size\": 32, \"test_crop_size\": 32},"
    " \"train\": {\"batch_size\": 2},"
    " \"solver\": {\"base_lr\": 0.02, \"lrs\": [1], \"steps\": [0], \"max_epoch\": 1},"
    " \"model\": {\"depth\": 18, \"width_per_group\": 8, \"alpha\": 2, \"num_classes\": 12},"
    " \"run\": {\"device\": \"%s\", \"data_dir\": \"%s\", \"precise_bn_batches\": 1,"
    " \"test_num_temporal_views\": 1, \"test_num_spatial_crops\": 1}}";

static void schedule_and_plan(void) {
  char config[4096];
  snprintf(config, sizeof config, TINY, "cpu", "");
  mg_schedule *s = (mg_schedule *)&cases; /* a sentinel: must stay as it is on failure */
  EXPECT(MG_STATUS_NULL_ARGUMENT, mg_schedule_new(NULL, &s));
  EXPECT(MG_STATUS_NULL_ARGUMENT, mg_schedule_new(config, NULL));
  EXPECT(MG_STATUS_INVALID_CONFIG, mg_schedule_new("{\"data\": ", &s));
  EXPECT(MG_STATUS_INVALID_CONFIG, mg_schedule_new("{\"dta\": {}}", &s));
  EXPECT(MG_STATUS_INVALID_CONFIG, mg_schedule_new("{\"data\": {\"num_frames\": 0}}", &s));
  EXPECT(MG_STATUS_INVALID_CONFIG,
         mg_schedule_new("{\"multigrid\": {\"short_cycle\": true, \"epoch_factor\": 1e12}}", &s));
  EXPECT(MG_STATUS_INVALID_ARGUMENT, mg_schedule_new("{\"\xff\": 1}", &s));
  UNTOUCHED(s == (mg_schedule *)&cases);
  s = NULL;
  EXPECT(MG_STATUS_OK, mg_schedule_new(config, &s));

  /* The default normalisation, the one source of the bindings' defaults. */
  float norm_mean[3] = {7, 7, 7}, norm_std[3] = {7, 7, 7};
  EXPECT(MG_STATUS_NULL_ARGUMENT, mg_default_normalization(NULL, norm_std));
  EXPECT(MG_STATUS_NULL_ARGUMENT, mg_default_normalization(norm_mean, NULL));
  UNTOUCHED(norm_mean[0] == 7 && norm_std[0] == 7);
  EXPECT(MG_STATUS_OK, mg_default_normalization(norm_mean, norm_std));
  UNTOUCHED(norm_mean[0] == 0.45f && norm_mean[2] == 0.45f && norm_std[1] == 0.225f);

  /* Overrides: the config back with them applied, or an error naming the bad one. */
  char text[8192];
  size_t text_len = 7;
  const char *sets[] = {"SOLVER.BASE_LR=0.5", "run.precision=fp32"};
  const char *bad_key[] = {"solver.base_lrr=0.5"};
  const char *bad_value[] = {"run.precision=fp8"};
  const char *no_eq[] = {"solver.base_lr"};
  memset(text, 0x5a, sizeof text);
  EXPECT(MG_STATUS_NULL_ARGUMENT, mg_config_apply_overrides(NULL, sets, 2, text, sizeof text, &text_len));
  EXPECT(MG_STATUS_NULL_ARGUMENT, mg_config_apply_overrides(config, NULL, 2, text, sizeof text, &text_len));
  EXPECT(MG_STATUS_NULL_ARGUMENT, mg_config_apply_overrides(config, sets, 2, text, sizeof text, NULL));
  EXPECT(MG_STATUS_INVALID_CONFIG, mg_config_apply_overrides(config, bad_key, 1, text, sizeof text, &text_len));
  MESSAGE_HAS("base_lrr");
  EXPECT(MG_STATUS_INVALID_CONFIG, mg_config_apply_overrides(config, bad_value, 1, text, sizeof text, &text_len));
  MESSAGE_HAS("run.precision: must be auto, fp32, bf16 or fp16, got \"fp8\"");
  EXPECT(MG_STATUS_INVALID_CONFIG, mg_config_apply_overrides(config, no_eq, 1, text, sizeof text, &text_len));
  MESSAGE_HAS("expected SECTION.KEY=VALUE");
  UNTOUCHED(text_len == 7 && (unsigned char)text[0] == 0x5a);
  EXPECT(MG_STATUS_BUFFER_TOO_SMALL, mg_config_apply_overrides(config, sets, 2, NULL, 0, &text_len));
  UNTOUCHED((unsigned char)text[0] == 0x5a);
  size_t needed = text_len;
  EXPECT(MG_STATUS_BUFFER_TOO_SMALL, mg_config_apply_overrides(config, sets, 2, text, needed, &text_len));
  UNTOUCHED((unsigned char)text[0] == 0x5a && text_len == needed);
  EXPECT(MG_STATUS_OK, mg_config_apply_overrides(config, sets, 2, text, needed + 1, &text_len));
  UNTOUCHED(text_len == needed && strlen(text) == needed && strstr(text, "\"base_lr\": 0.5") != NULL);
  EXPECT(MG_STATUS_OK, mg_config_apply_overrides(config, NULL, 0, text, sizeof text, &text_len));

  size_t n = 7;
  uint32_t u = 7;
  bool b = true;
  double lr = 7.0;
  mg_stage stage;
  memset(&stage, 0x5a, sizeof stage);
  EXPECT(MG_STATUS_NULL_ARGUMENT, mg_schedule_num_stages(NULL, &n));
  EXPECT(MG_STATUS_NULL_ARGUMENT, mg_schedule_num_stages(s, NULL));
  EXPECT(MG_STATUS_NULL_ARGUMENT, mg_schedule_max_epoch(NULL, &u));
  EXPECT(MG_STATUS_NULL_ARGUMENT, mg_schedule_is_eval_epoch(NULL, 0, &b));
  EXPECT(MG_STATUS_NULL_ARGUMENT, mg_schedule_stage(s, 0, NULL));
  EXPECT(MG_STATUS_OUT_OF_RANGE, mg_schedule_stage(s, 1, &stage));
  EXPECT(MG_STATUS_OUT_OF_RANGE, mg_schedule_stage(s, (size_t)-1, &stage));
  UNTOUCHED(stage.num_frames == 0x5a5a5a5au);
  EXPECT(MG_STATUS_INVALID_ARGUMENT, mg_schedule_lr_at(s, -1.0, &lr));
  EXPECT(MG_STATUS_INVALID_ARGUMENT, mg_schedule_lr_at(s, NAN, &lr));
  EXPECT(MG_STATUS_INVALID_ARGUMENT, mg_schedule_lr_at(s, INFINITY, &lr));
  UNTOUCHED(lr == 7.0);
  UNTOUCHED(n == 7 && u == 7 && b);

  mg_plan *p = (mg_plan *)&cases;
  EXPECT(MG_STATUS_NULL_ARGUMENT, mg_plan_new(NULL, 8, 1, 0, 0, &p));
  EXPECT(MG_STATUS_NULL_ARGUMENT, mg_plan_new(s, 8, 1, 0, 0, NULL));
  EXPECT(MG_STATUS_INVALID_ARGUMENT, mg_plan_new(s, 0, 1, 0, 0, &p));
  EXPECT(MG_STATUS_INVALID_ARGUMENT, mg_plan_new(s, UINT64_MAX, 1, 0, 0, &p));
  EXPECT(MG_STATUS_INVALID_ARGUMENT, mg_plan_new(s, 8, 0, 0, 0, &p));
  EXPECT(MG_STATUS_INVALID_ARGUMENT, mg_plan_new(s, 8, 2, 2, 0, &p));
  EXPECT(MG_STATUS_INVALID_ARGUMENT, mg_plan_new(s, 8, 4, 0, 0, &p)); /* batch 2 on 4 ranks */
  EXPECT(MG_STATUS_INVALID_ARGUMENT, mg_plan_new(s, 1, 1, 0, 0, &p)); /* no full batch */
  UNTOUCHED(p == (mg_plan *)&cases);
  p = NULL;
  EXPECT(MG_STATUS_OK, mg_plan_new(s, 8, 1, 0, 0, &p));

  uint64_t total = 7;
  EXPECT(MG_STATUS_NULL_ARGUMENT, mg_plan_total_steps(NULL, &total));
  EXPECT(MG_STATUS_NULL_ARGUMENT, mg_plan_total_steps(p, NULL));
  EXPECT(MG_STATUS_OUT_OF_RANGE, mg_plan_steps_in_epoch(p, 1, &total));
  UNTOUCHED(total == 7);
  mg_step step;
  memset(&step, 0x5a, sizeof step);
  EXPECT(MG_STATUS_NULL_ARGUMENT, mg_plan_step(p, 0, NULL));
  EXPECT(MG_STATUS_OUT_OF_RANGE, mg_plan_step(p, 4, &step));
  UNTOUCHED(step.batch_size == 0x5a5a5a5au);
  uint64_t idx[2] = {7, 7};
  size_t len = 0;
  EXPECT(MG_STATUS_OUT_OF_RANGE, mg_plan_step_indices(p, 4, idx, 2, &len));
  EXPECT(MG_STATUS_BUFFER_TOO_SMALL, mg_plan_step_indices(p, 0, NULL, 0, &len));
  UNTOUCHED(len == 2); /* the documented exception: the count needed */
  EXPECT(MG_STATUS_BUFFER_TOO_SMALL, mg_plan_step_indices(p, 0, idx, 1, &len));
  UNTOUCHED(idx[0] == 7 && idx[1] == 7);
  EXPECT(MG_STATUS_NULL_ARGUMENT, mg_plan_step_indices(p, 0, NULL, 2, &len));
  EXPECT(MG_STATUS_NULL_ARGUMENT, mg_plan_step_indices(p, 0, idx, 2, NULL));

  /* Collation of plan steps. */
  size_t slow_len = 7, fast_len = 7;
  EXPECT(MG_STATUS_OUT_OF_RANGE, mg_collate_step_len(p, 4, 2, &slow_len, &fast_len));
  EXPECT(MG_STATUS_INVALID_ARGUMENT, mg_collate_step_len(p, 0, 9, &slow_len, &fast_len));
  EXPECT(MG_STATUS_NULL_ARGUMENT, mg_collate_step_len(p, 0, 2, NULL, &fast_len));
  UNTOUCHED(slow_len == 7 && fast_len == 7);
  EXPECT(MG_STATUS_OK, mg_collate_step_len(p, 0, 2, &slow_len, &fast_len));
  float *slow = (float *)malloc(slow_len * sizeof(float));
  float *fast = (float *)malloc(fast_len * sizeof(float));
  for (size_t i = 0; i < fast_len; i++) fast[i] = 7.0f;
  uint8_t *frames = (uint8_t *)malloc(8 * 40 * 40 * 3);
  memset(frames, 50, 8 * 40 * 40 * 3);
  mg_clip clips[2] = {{frames, 8, 40, 40}, {frames, 8, 40, 40}};
  EXPECT(MG_STATUS_OUT_OF_RANGE,
         mg_collate_step(p, 4, clips, 2, 2, slow, slow_len, fast, fast_len));
  EXPECT(MG_STATUS_INVALID_ARGUMENT,
         mg_collate_step(p, 0, clips, 1, 2, slow, slow_len, fast, fast_len));
  EXPECT(MG_STATUS_INVALID_ARGUMENT,
         mg_collate_step(p, 0, clips, 2, 2, slow, slow_len - 1, fast, fast_len));
  EXPECT(MG_STATUS_INVALID_ARGUMENT,
         mg_collate_step(p, 0, clips, 2, 2, slow, slow_len, fast, fast_len + 1));
  EXPECT(MG_STATUS_INVALID_ARGUMENT,
         mg_collate_step(p, 0, clips, 2, 0, slow, slow_len, fast, fast_len));
  EXPECT(MG_STATUS_INVALID_ARGUMENT,
         mg_collate_step(p, 0, clips, 2, 2, NULL, 0, fast, fast_len));
  EXPECT(MG_STATUS_INVALID_ARGUMENT,
         mg_collate_step(p, 0, clips, 2, 9, slow, slow_len, fast, fast_len));
  mg_clip empty[2] = {{frames, 0, 40, 40}, {frames, 8, 40, 40}};
  EXPECT(MG_STATUS_INVALID_ARGUMENT,
         mg_collate_step(p, 0, empty, 2, 2, slow, slow_len, fast, fast_len));
  EXPECT(MG_STATUS_NULL_ARGUMENT,
         mg_collate_step(p, 0, NULL, 2, 2, slow, slow_len, fast, fast_len));
  EXPECT(MG_STATUS_NULL_ARGUMENT,
         mg_collate_step(p, 0, clips, 2, 2, slow, slow_len, NULL, fast_len));
  UNTOUCHED(fast[0] == 7.0f && fast[fast_len - 1] == 7.0f);
  EXPECT(MG_STATUS_OK, mg_collate_step(p, 0, clips, 2, 2, slow, slow_len, fast, fast_len));

  /* Collation with explicit parameters: one clip, 2 frames at 32 px. */
  const float mean[3] = {0.45f, 0.45f, 0.45f}, std3[3] = {0.225f, 0.225f, 0.225f};
  const float zero_std[3] = {0.225f, 0.0f, 0.225f}, nan_mean[3] = {NAN, 0.45f, 0.45f};
  mg_clip_params cp = {0, 1, 40, 0, 0, false};
  size_t out_len = 3 * 2 * 32 * 32;
  float *out = (float *)malloc(out_len * sizeof(float));
  out[0] = 7.0f;
#define EXPLICIT(clip, params, n, t, s, m, sd, o, ol) \
  mg_collate_explicit(clip, params, n, t, s, m, sd, o, ol)
  EXPECT(MG_STATUS_NULL_ARGUMENT, EXPLICIT(NULL, &cp, 1, 2, 32, mean, std3, out, out_len));
  EXPECT(MG_STATUS_NULL_ARGUMENT, EXPLICIT(clips, NULL, 1, 2, 32, mean, std3, out, out_len));
  EXPECT(MG_STATUS_NULL_ARGUMENT, EXPLICIT(clips, &cp, 1, 2, 32, NULL, std3, out, out_len));
  EXPECT(MG_STATUS_NULL_ARGUMENT, EXPLICIT(clips, &cp, 1, 2, 32, mean, std3, NULL, out_len));
  EXPECT(MG_STATUS_INVALID_ARGUMENT, EXPLICIT(clips, &cp, 1, 0, 32, mean, std3, out, out_len));
  EXPECT(MG_STATUS_INVALID_ARGUMENT, EXPLICIT(clips, &cp, 1, 2, 0, mean, std3, out, out_len));
  EXPECT(MG_STATUS_INVALID_ARGUMENT, EXPLICIT(clips, &cp, 1, 2000, 32, mean, std3, out, 0));
  EXPECT(MG_STATUS_INVALID_ARGUMENT, EXPLICIT(clips, &cp, 1, 2, 5000, mean, std3, out, 0));
  EXPECT(MG_STATUS_INVALID_ARGUMENT,
         EXPLICIT(clips, &cp, (size_t)1 << 21, 2, 32, mean, std3, out, out_len));
  EXPECT(MG_STATUS_INVALID_ARGUMENT, EXPLICIT(empty, &cp, 1, 2, 32, mean, std3, out, out_len));
  mg_clip null_frames = {NULL, 8, 40, 40};
  EXPECT(MG_STATUS_INVALID_ARGUMENT,
         EXPLICIT(&null_frames, &cp, 1, 2, 32, mean, std3, out, out_len));
  mg_clip overflow = {NULL, UINT32_MAX, UINT32_MAX, UINT32_MAX};
  EXPECT(MG_STATUS_INVALID_ARGUMENT, EXPLICIT(&overflow, &cp, 1, 2, 32, mean, std3, out, out_len));
  mg_clip_params bad = cp;
  bad.stride = 0;
  EXPECT(MG_STATUS_INVALID_ARGUMENT, EXPLICIT(clips, &bad, 1, 2, 32, mean, std3, out, out_len));
  bad = cp;
  bad.start_frame = 8;
  EXPECT(MG_STATUS_INVALID_ARGUMENT, EXPLICIT(clips, &bad, 1, 2, 32, mean, std3, out, out_len));
  bad = cp;
  bad.short_side = 31;
  EXPECT(MG_STATUS_INVALID_ARGUMENT, EXPLICIT(clips, &bad, 1, 2, 32, mean, std3, out, out_len));
  bad = cp;
  bad.crop_x = 9;
  EXPECT(MG_STATUS_INVALID_ARGUMENT, EXPLICIT(clips, &bad, 1, 2, 32, mean, std3, out, out_len));
  EXPECT(MG_STATUS_INVALID_ARGUMENT,
         EXPLICIT(clips, &cp, 1, 2, 32, mean, zero_std, out, out_len));
  EXPECT(MG_STATUS_INVALID_ARGUMENT,
         EXPLICIT(clips, &cp, 1, 2, 32, nan_mean, std3, out, out_len));
  EXPECT(MG_STATUS_INVALID_ARGUMENT, EXPLICIT(clips, &cp, 1, 2, 32, mean, std3, out, out_len - 1));
  UNTOUCHED(out[0] == 7.0f);
  EXPECT(MG_STATUS_OK, EXPLICIT(clips, &cp, 1, 2, 32, mean, std3, out, out_len));
  EXPECT(MG_STATUS_INVALID_ARGUMENT, mg_collate_set_num_threads((size_t)-1));

  free(out);
  free(frames);
  free(slow);
  free(fast);
  mg_plan_free(p);
  mg_schedule_free(s);
}

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  if (f) {
    fputs(text, f);
    fclose(f);
  }
}

static void datasets(const char *data, const char *scratch) {
  char path[4096];
  mg_dataset *d = (mg_dataset *)&cases;
  snprintf(path, sizeof path, "%s/no-such.mgstore", scratch);
  EXPECT(MG_STATUS_NULL_ARGUMENT, mg_dataset_open_store(NULL, &d));
  EXPECT(MG_STATUS_IO, mg_dataset_open_store(path, &d));
  snprintf(path, sizeof path, "%s/corrupt.mgstore", scratch);
  write_file(path, "this is not a clip store, it is a sentence long enough for the header");
  EXPECT(MG_STATUS_DATA, mg_dataset_open_store(path, &d));
  EXPECT(MG_STATUS_IO, mg_dataset_open_video_list(scratch, "no-such-split", &d));
  snprintf(path, sizeof path, "%s/bad.csv", scratch);
  write_file(path, "video.mp4 not-a-number\n");
  EXPECT(MG_STATUS_DATA, mg_dataset_open_video_list(scratch, "bad", &d));
  EXPECT(MG_STATUS_NULL_ARGUMENT, mg_dataset_open_video_list(scratch, NULL, &d));
  UNTOUCHED(d == (mg_dataset *)&cases);

  /* Four videos that do not exist: every replacement fails too. */
  snprintf(path, sizeof path, "%s/missing.csv", scratch);
  write_file(path, "a.mp4 0\nb.mp4 1\nc.mp4 2\nd.mp4 3\n");
  d = NULL;
  EXPECT(MG_STATUS_OK, mg_dataset_open_video_list(scratch, "missing", &d));
  uint64_t n = 0;
  EXPECT(MG_STATUS_NULL_ARGUMENT, mg_dataset_len(NULL, &n));
  char config[4096];
  snprintf(config, sizeof config, TINY, "cpu", "");
  mg_schedule *s = NULL;
  mg_plan *p4 = NULL, *p8 = NULL;
  EXPECT(MG_STATUS_OK, mg_schedule_new(config, &s));
  EXPECT(MG_STATUS_OK, mg_plan_new(s, 4, 1, 0, 0, &p4));
  EXPECT(MG_STATUS_OK, mg_plan_new(s, 8, 1, 0, 0, &p8));
  size_t slow_len = 0, fast_len = 0;
  EXPECT(MG_STATUS_OK, mg_collate_step_len(p4, 0, 2, &slow_len, &fast_len));
  float *slow = (float *)malloc(slow_len * sizeof(float));
  float *fast = (float *)malloc(fast_len * sizeof(float));
  int64_t labels[2] = {-7, -7};
  EXPECT(MG_STATUS_DATA,
         mg_dataset_load_step(d, p4, 0, 2, slow, slow_len, fast, fast_len, labels, 2));
  EXPECT(MG_STATUS_INVALID_ARGUMENT,
         mg_dataset_load_step(d, p8, 0, 2, slow, slow_len, fast, fast_len, labels, 2));
  EXPECT(MG_STATUS_OUT_OF_RANGE,
         mg_dataset_load_step(d, p4, 2, 2, slow, slow_len, fast, fast_len, labels, 2));
  EXPECT(MG_STATUS_NULL_ARGUMENT,
         mg_dataset_load_step(NULL, p4, 0, 2, slow, slow_len, fast, fast_len, labels, 2));
  mg_dataset_free(d);

  /* A real store: buffer lengths and alpha. */
  snprintf(path, sizeof path, "%s/train.mgstore", data);
  d = NULL;
  EXPECT(MG_STATUS_OK, mg_dataset_open_store(path, &d));
  EXPECT(MG_STATUS_OK, mg_dataset_len(d, &n));
  mg_plan *pn = NULL;
  EXPECT(MG_STATUS_OK, mg_plan_new(s, n, 1, 0, 0, &pn));
  EXPECT(MG_STATUS_INVALID_ARGUMENT,
         mg_dataset_load_step(d, pn, 0, 2, slow, slow_len - 1, fast, fast_len, labels, 2));
  EXPECT(MG_STATUS_INVALID_ARGUMENT,
         mg_dataset_load_step(d, pn, 0, 9, slow, slow_len, fast, fast_len, labels, 2));
  UNTOUCHED(labels[0] == -7 && labels[1] == -7);
  EXPECT(MG_STATUS_OK,
         mg_dataset_load_step(d, pn, 0, 2, slow, slow_len, fast, fast_len, labels, 2));
  free(slow);
  free(fast);
  mg_plan_free(pn);
  mg_plan_free(p4);
  mg_plan_free(p8);
  mg_schedule_free(s);
  mg_dataset_free(d);
}

static int32_t cancel_at_once(void *user_data, const mg_progress *p) {
  (void)user_data;
  (void)p;
  return 1;
}

/* A newer header's structs: one field more than this library knows. */
typedef struct {
  mg_dist_options known;
  uint64_t later;
} newer_dist_options;
typedef struct {
  mg_summary known;
  uint64_t later;
} newer_summary;

struct reentry {
  mg_trainer *trainer;
  mg_schedule *other;
  int calls;
};

/* Calls back into the trainer that runs it: every call is refused, none touches the trainer
 * fit is in the middle of (under ASan a free here would be a use after free in fit). */
static int32_t reenter(void *user_data, const mg_progress *p) {
  (void)p;
  struct reentry *r = (struct reentry *)user_data;
  mg_trainer *t = r->trainer;
  r->calls++;
  uint32_t rank = 7, world = 7;
  uint64_t next = 7;
  bool resumed = false;
  double loss = 7.0;
  static float buf[2 * 3 * 8 * 32 * 32];
  int64_t shape[5] = {2, 3, 8, 32, 32}, labels[2] = {0, 1};
  mg_accuracy acc;
  memset(&acc, 0x5a, sizeof acc);
  mg_summary sum;
  sum.struct_size = sizeof sum;
  sum.steps = 7;
  EXPECT(MG_STATUS_BUSY, mg_trainer_rank(t, &rank, &world));
  MESSAGE_HAS("mg_trainer_rank: the trainer is inside mg_trainer_fit");
  EXPECT(MG_STATUS_BUSY, mg_trainer_next_step(t, &next));
  MESSAGE_HAS("mg_trainer_next_step: the trainer is inside mg_trainer_fit");
  EXPECT(MG_STATUS_BUSY, mg_trainer_resume(t, &resumed));
  EXPECT(MG_STATUS_BUSY, mg_trainer_fit(t, reenter, r, &sum));
  MESSAGE_HAS("mg_trainer_fit: the trainer is inside mg_trainer_fit");
  EXPECT(MG_STATUS_BUSY, mg_trainer_train_step(t, buf, shape, buf, shape, labels, 1, 0.01, &loss));
  MESSAGE_HAS("mg_trainer_train_step: the trainer is inside mg_trainer_fit");
  EXPECT(MG_STATUS_BUSY, mg_trainer_train_step_targets(t, buf, shape, buf, shape, buf, 12, 1,
                                                       0.01, &loss));
  EXPECT(MG_STATUS_BUSY, mg_trainer_evaluate(t, "val", &acc));
  EXPECT(MG_STATUS_BUSY, mg_trainer_save(t));
  EXPECT(MG_STATUS_BUSY, mg_trainer_load(t, "."));
  EXPECT(MG_STATUS_BUSY, mg_trainer_init_from(t, ".", 0));
  UNTOUCHED(rank == 7 && world == 7 && next == 7 && loss == 7.0 && sum.steps == 7);
  UNTOUCHED(acc.clips == 0x5a5a5a5a5a5a5a5aull);
  char metrics[64] = "untouched";
  cases++;
  if (mg_trainer_last_metrics(t, metrics, sizeof metrics) != 0) failed++;
  UNTOUCHED(strcmp(metrics, "untouched") == 0);
  MESSAGE_HAS("mg_trainer_last_metrics: the trainer is inside mg_trainer_fit");
  mg_trainer_free(t); /* refused: fit goes on with this trainer */
  MESSAGE_HAS("mg_trainer_free: the trainer is inside mg_trainer_fit");
  /* Other handles are free to use. */
  uint32_t epochs = 0;
  EXPECT(MG_STATUS_OK, mg_schedule_max_epoch(r->other, &epochs));
  return 1;
}

static void trainer(const char *data, const char *scratch) {
  char config[4096], out_dir[1024], path[4096], cmd_buf[8192];
  snprintf(config, sizeof config, TINY, "cpu", data);
  snprintf(out_dir, sizeof out_dir, "%s/run", scratch);
  mg_trainer *t = (mg_trainer *)&cases;
  EXPECT(MG_STATUS_NULL_ARGUMENT, mg_trainer_new(config, out_dir, NULL));
  EXPECT(MG_STATUS_INVALID_CONFIG, mg_trainer_new("{\"dta\": {}}", out_dir, &t));
  char no_data[4096];
  snprintf(no_data, sizeof no_data, TINY, "cpu", scratch); /* no train split there */
  EXPECT(MG_STATUS_IO, mg_trainer_new(no_data, out_dir, &t));
  char corrupt[4096], corrupt_dir[1024];
  snprintf(corrupt_dir, sizeof corrupt_dir, "%s/corrupt-data", scratch);
  char mkdir_cmd[2048];
  snprintf(mkdir_cmd, sizeof mkdir_cmd, "mkdir -p '%s'", corrupt_dir);
  if (system(mkdir_cmd) != 0) fprintf(stderr, "cannot run %s\n", mkdir_cmd);
  snprintf(path, sizeof path, "%s/train.mgstore", corrupt_dir);
  write_file(path, "this is not a clip store, it is a sentence long enough for the header");
  snprintf(corrupt, sizeof corrupt, TINY, "cpu", corrupt_dir);
  EXPECT(MG_STATUS_DATA, mg_trainer_new(corrupt, out_dir, &t));
  char cuda[4096];
  snprintf(cuda, sizeof cuda, TINY, "cuda:63", data); /* no machine has a 64th GPU */
  EXPECT(MG_STATUS_CUDA_UNAVAILABLE, mg_trainer_new(cuda, out_dir, &t));
  mg_dist_options o;
  memset(&o, 0x5a, sizeof o);
  EXPECT(MG_STATUS_NULL_ARGUMENT, mg_dist_options_default(NULL, sizeof o));
  /* Sizes no mg_dist_options has: smaller than the first versioned one, or absurd. */
  EXPECT(MG_STATUS_INVALID_ARGUMENT, mg_dist_options_default(&o, 0));
  EXPECT(MG_STATUS_INVALID_ARGUMENT, mg_dist_options_default(&o, sizeof o - 1));
  EXPECT(MG_STATUS_INVALID_ARGUMENT, mg_dist_options_default(&o, 1 << 20));
  MESSAGE_HAS("struct_size is 1048576");
  UNTOUCHED(o.rank == 0x5a5a5a5a);
  EXPECT(MG_STATUS_OK, mg_dist_options_default(&o, sizeof o));
  UNTOUCHED(o.struct_size == sizeof o && o.rank == -1); /* written: the call succeeded */
  o.rank = -2;
  EXPECT(MG_STATUS_INVALID_ARGUMENT, mg_trainer_new_dist(config, out_dir, &o, &t));
  o.rank = -1;
  o.timeout_s = NAN;
  EXPECT(MG_STATUS_INVALID_ARGUMENT, mg_trainer_new_dist(config, out_dir, &o, &t));
  o.timeout_s = 0;
  o.struct_size = 8; /* never set: below any mg_dist_options */
  EXPECT(MG_STATUS_INVALID_ARGUMENT, mg_trainer_new_dist(config, out_dir, &o, &t));
  MESSAGE_HAS("dist->struct_size is 8");
  /* A newer header's struct: its extra field at 0 means "as before", set it is refused. */
  newer_dist_options newer;
  memset(&newer, 0x5a, sizeof newer);
  EXPECT(MG_STATUS_OK, mg_dist_options_default(&newer.known, sizeof newer));
  UNTOUCHED(newer.known.struct_size == sizeof newer && newer.later == 0); /* zeroed */
  newer.later = 1;
  EXPECT(MG_STATUS_INVALID_ARGUMENT, mg_trainer_new_dist(config, out_dir, &newer.known, &t));
  MESSAGE_HAS("a field from a newer header");
  UNTOUCHED(t == (mg_trainer *)&cases);
  newer.later = 0;
  newer.known.rank = 0;
  newer.known.world_size = 1;
  t = NULL;
  EXPECT(MG_STATUS_OK, mg_trainer_new_dist(config, out_dir, &newer.known, &t));
  mg_trainer_free(t);
  t = NULL;
  EXPECT(MG_STATUS_OK, mg_trainer_new(config, out_dir, &t));

  uint32_t rank = 7, world = 7;
  uint64_t next = 7;
  const mg_trainer *view = t; /* queries take a const trainer (-Werror: no cast needed) */
  EXPECT(MG_STATUS_NULL_ARGUMENT, mg_trainer_rank(NULL, &rank, &world));
  EXPECT(MG_STATUS_NULL_ARGUMENT, mg_trainer_next_step(view, NULL));
  UNTOUCHED(rank == 7 && world == 7 && next == 7);
  EXPECT(MG_STATUS_OK, mg_trainer_rank(view, &rank, &world));

  /* One host step: N=2, alpha 2, 8 frames at 32 px. */
  enum { N = 2, T = 8, S = 32 };
  static float fast[N * 3 * T * S * S], slow[N * 3 * (T / 2) * S * S], tiny[1 * 3 * 2 * 16 * 16];
  for (size_t i = 0; i < sizeof fast / sizeof fast[0]; i++) fast[i] = (float)(i % 7) * 0.1f;
  for (size_t i = 0; i < sizeof slow / sizeof slow[0]; i++) slow[i] = (float)(i % 5) * 0.1f;
  int64_t fs[5] = {N, 3, T, S, S}, ss[5] = {N, 3, T / 2, S, S};
  int64_t ss_bad[5] = {N, 3, 3, S, S}, fs_neg[5] = {N, 3, -T, S, S};
  int64_t fs_huge[5] = {N, 3, INT64_MAX / 4, 1 << 20, 1 << 20};
  int64_t tiny_f[5] = {1, 3, 2, 16, 16}, tiny_s[5] = {1, 3, 1, 16, 16};
  int64_t labels[N] = {0, 1}, bad_labels[N] = {0, 12};
  double loss = 7.0;
  EXPECT(MG_STATUS_NULL_ARGUMENT,
         mg_trainer_train_step(t, slow, ss, NULL, fs, labels, 1, 0.01, &loss));
  EXPECT(MG_STATUS_INVALID_ARGUMENT,
         mg_trainer_train_step(t, slow, ss, fast, fs_neg, labels, 1, 0.01, &loss));
  EXPECT(MG_STATUS_INVALID_ARGUMENT,
         mg_trainer_train_step(t, slow, ss, fast, fs_huge, labels, 1, 0.01, &loss));
  EXPECT(MG_STATUS_INVALID_ARGUMENT,
         mg_trainer_train_step(t, slow, ss_bad, fast, fs, labels, 1, 0.01, &loss));
  EXPECT(MG_STATUS_INVALID_ARGUMENT,
         mg_trainer_train_step(t, slow, ss, fast, fs, labels, 3, 0.01, &loss));
  EXPECT(MG_STATUS_INVALID_ARGUMENT,
         mg_trainer_train_step(t, slow, ss, fast, fs, labels, 1, NAN, &loss));
  EXPECT(MG_STATUS_INVALID_ARGUMENT,
         mg_trainer_train_step(t, slow, ss, fast, fs, labels, 1, INFINITY, &loss));
  EXPECT(MG_STATUS_INVALID_ARGUMENT,
         mg_trainer_train_step(t, slow, ss, fast, fs, bad_labels, 1, 0.01, &loss));
  EXPECT(MG_STATUS_INVALID_ARGUMENT,
         mg_trainer_train_step(t, tiny, tiny_s, tiny, tiny_f, labels, 1, 0.01, &loss));
  UNTOUCHED(loss == 7.0);
  EXPECT(MG_STATUS_OK, mg_trainer_train_step(t, slow, ss, fast, fs, labels, 0, -1.0, &loss));

  mg_accuracy acc;
  memset(&acc, 0x5a, sizeof acc);
  EXPECT(MG_STATUS_NULL_ARGUMENT, mg_trainer_evaluate(t, NULL, &acc));
  EXPECT(MG_STATUS_IO, mg_trainer_evaluate(t, "no-such-split", &acc));
  snprintf(path, sizeof path, "%s/broken.mgstore", data);
  write_file(path, "this is not a clip store, it is a sentence long enough for the header");
  EXPECT(MG_STATUS_DATA, mg_trainer_evaluate(t, "broken", &acc));
  remove(path);
  UNTOUCHED(acc.clips == 0x5a5a5a5a5a5a5a5aull);

  snprintf(path, sizeof path, "%s/no-such-checkpoint", scratch);
  EXPECT(MG_STATUS_IO, mg_trainer_load(t, path));
  EXPECT(MG_STATUS_INVALID_ARGUMENT, mg_trainer_init_from(t, path, 0));
  EXPECT(MG_STATUS_INVALID_ARGUMENT, mg_trainer_init_from(t, path, 2));
  EXPECT(MG_STATUS_NULL_ARGUMENT, mg_trainer_init_from(t, NULL, 0));
  EXPECT(MG_STATUS_NULL_ARGUMENT, mg_trainer_load(t, NULL));
  bool resumed = true;
  EXPECT(MG_STATUS_NULL_ARGUMENT, mg_trainer_resume(t, NULL));
  EXPECT(MG_STATUS_OK, mg_trainer_resume(t, &resumed));
  EXPECT(MG_STATUS_NULL_ARGUMENT, mg_trainer_save(NULL));
  EXPECT(MG_STATUS_OK, mg_trainer_save(t));

  /* A summary whose struct_size was never set is refused before any training. */
  mg_summary sum;
  memset(&sum, 0, sizeof sum);
  sum.steps = 7;
  uint64_t before = 0, after = 0;
  EXPECT(MG_STATUS_OK, mg_trainer_next_step(view, &before));
  EXPECT(MG_STATUS_INVALID_ARGUMENT, mg_trainer_fit(t, cancel_at_once, NULL, &sum));
  MESSAGE_HAS("out->struct_size is 0");
  sum.struct_size = 8;
  EXPECT(MG_STATUS_INVALID_ARGUMENT, mg_trainer_fit(t, cancel_at_once, NULL, &sum));
  EXPECT(MG_STATUS_OK, mg_trainer_next_step(view, &after));
  UNTOUCHED(sum.steps == 7 && sum.struct_size == 8 && before == after);

  /* Cancelled by the callback: a success, and the summary says it stopped early. */
  sum.struct_size = sizeof sum;
  EXPECT(MG_STATUS_OK, mg_trainer_fit(t, cancel_at_once, NULL, &sum));
  cases++;
  if (!(sum.cancelled && sum.preempted == 0 && sum.steps == before + 1 &&
        sum.struct_size == sizeof sum && isnan(sum.test_top1))) {
    fprintf(stderr, "line %d: cancelled fit's summary: cancelled %d preempted %d steps %llu\n",
            __LINE__, sum.cancelled, sum.preempted, (unsigned long long)sum.steps);
    failed++;
  }
  /* A newer header's summary: the library writes what it knows and says how much. */
  newer_summary big;
  memset(&big, 0, sizeof big);
  big.known.struct_size = sizeof big;
  big.later = 0x5a5a5a5a5a5a5a5aull;
  EXPECT(MG_STATUS_OK, mg_trainer_fit(t, cancel_at_once, NULL, &big.known));
  UNTOUCHED(big.later == 0x5a5a5a5a5a5a5a5aull); /* not the library's to write */
  cases++;
  if (!(big.known.struct_size == sizeof(mg_summary) && big.known.cancelled)) failed++;

  /* A progress callback that calls back into its own trainer: refused, then the trainer
   * works on. */
  mg_schedule *other = NULL;
  EXPECT(MG_STATUS_OK, mg_schedule_new(config, &other));
  struct reentry r = {t, other, 0};
  EXPECT(MG_STATUS_OK, mg_trainer_fit(t, reenter, &r, &sum));
  cases++;
  if (r.calls != 1 || !sum.cancelled) failed++;
  mg_schedule_free(other);
  EXPECT(MG_STATUS_OK, mg_trainer_next_step(view, &after));

  /* Trained to the end: past the plan, its LR and BN groups no longer exist and must be
   * given. */
  EXPECT(MG_STATUS_NULL_ARGUMENT, mg_trainer_fit(t, NULL, NULL, NULL));
  EXPECT(MG_STATUS_OK, mg_trainer_fit(t, NULL, NULL, &sum));
  cases++;
  if (sum.cancelled) failed++;
  EXPECT(MG_STATUS_OUT_OF_RANGE,
         mg_trainer_train_step(t, slow, ss, fast, fs, labels, 0, 0.01, &loss));
  EXPECT(MG_STATUS_OUT_OF_RANGE,
         mg_trainer_train_step(t, slow, ss, fast, fs, labels, 1, -1.0, &loss));
  EXPECT(MG_STATUS_OK, mg_trainer_train_step(t, slow, ss, fast, fs, labels, 1, 0.01, &loss));
  mg_trainer_free(t);

  /* fit reports a val split that exists but cannot be read. */
  char fit_data[1024];
  snprintf(fit_data, sizeof fit_data, "%s/fit-data", scratch);
  snprintf(cmd_buf, sizeof cmd_buf, "mkdir -p '%s' && cp '%s/train.mgstore' '%s/'", fit_data, data,
           fit_data);
  if (system(cmd_buf) != 0) fprintf(stderr, "cannot run %s\n", cmd_buf);
  snprintf(path, sizeof path, "%s/val.mgstore", fit_data);
  write_file(path, "this is not a clip store, it is a sentence long enough for the header");
  char fit_config[4096], fit_out[1024];
  snprintf(fit_config, sizeof fit_config, TINY, "cpu", fit_data);
  snprintf(fit_out, sizeof fit_out, "%s/fit-run", scratch);
  t = NULL;
  EXPECT(MG_STATUS_OK, mg_trainer_new(fit_config, fit_out, &t));
  sum.struct_size = sizeof sum;
  EXPECT(MG_STATUS_DATA, mg_trainer_fit(t, NULL, NULL, &sum));
  mg_trainer_free(t);

  /* A checkpoint whose manifest is not JSON, in a run's checkpoint directory. */
  char bad_run[1024], cmd[8192];
  (void)cmd_buf;
  snprintf(bad_run, sizeof bad_run, "%s/bad-run", scratch);
  snprintf(cmd, sizeof cmd, "mkdir -p '%s/checkpoints/step_1'", bad_run);
  if (system(cmd) != 0) fprintf(stderr, "cannot run %s\n", cmd);
  snprintf(path, sizeof path, "%s/checkpoints/step_1/manifest.json", bad_run);
  write_file(path, "{ not json");
  t = NULL;
  EXPECT(MG_STATUS_OK, mg_trainer_new(config, bad_run, &t));
  EXPECT(MG_STATUS_DATA, mg_trainer_resume(t, &resumed));
  snprintf(path, sizeof path, "%s/checkpoints/step_1", bad_run);
  EXPECT(MG_STATUS_DATA, mg_trainer_load(t, path));
  EXPECT(MG_STATUS_DATA, mg_trainer_init_from(t, path, 0));
  /* Nowhere to write a checkpoint: a file stands where the directory goes. */
  snprintf(cmd, sizeof cmd, "rm -rf '%s/checkpoints'", bad_run);
  if (system(cmd) != 0) fprintf(stderr, "cannot run %s\n", cmd);
  snprintf(path, sizeof path, "%s/checkpoints", bad_run);
  write_file(path, "x");
  EXPECT(MG_STATUS_IO, mg_trainer_save(t));
  mg_trainer_free(t);

  /* An output directory that cannot be created: a regular file stands where it would go. */
  snprintf(path, sizeof path, "%s/a-file", scratch);
  write_file(path, "x");
  snprintf(out_dir, sizeof out_dir, "%s/a-file/run", scratch);
  t = NULL;
  EXPECT(MG_STATUS_IO, mg_trainer_new(config, out_dir, &t));
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s DATA_DIR SCRATCH_DIR\n", argv[0]);
    return 2;
  }
  schedule_and_plan();
  datasets(argv[1], argv[2]);
  trainer(argv[1], argv[2]);
  /* Never fail: the frees with NULL, the static queries. */
  mg_schedule_free(NULL);
  mg_plan_free(NULL);
  mg_dataset_free(NULL);
  mg_trainer_free(NULL);
  char buf[8];
  (void)mg_last_error_message(buf, sizeof buf);
  (void)mg_last_error_message(NULL, 0);
  if (strcmp(mg_status_str(12345), "unknown status") != 0) failed++;
  printf("%d cases, %d failed\n", cases, failed);
  return failed != 0;
}
