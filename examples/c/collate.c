/*
 * Builds the batch of a plan step through the C API: rank 0 of 64 in the Kinetics multigrid
 * plan, synthetic decoded clips, the seeded training policy, SlowFast's two pathways. Then one
 * clip with explicit parameters, and what a crop outside the frame reports.
 *
 *   cc -std=c11 -Iinclude examples/c/collate.c -Ltarget/release -lmultigrid -o collate
 *   ./collate configs/kinetics_slowfast_8x8_r50_multigrid.json
 *
 * Compiles as C11 and as C++.
 */
#include <stdio.h>
#include <stdlib.h>

#include "multigrid.h"

#define CLIP_FRAMES 40
#define CLIP_H 120
#define CLIP_W 160
#define ALPHA 4

static int fail(const char *what, mg_status status) {
  char msg[512];
  mg_last_error_message(msg, sizeof msg);
  fprintf(stderr, "%s failed: %s: %s\n", what, mg_status_str(status), msg);
  return 1;
}

static char *read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  char *text = (char *)malloc(1 << 16);
  size_t n = text ? fread(text, 1, (1 << 16) - 1, f) : 0;
  fclose(f);
  if (text) text[n] = '\0';
  return text;
}

/* A decoded clip stand-in: a gradient that moves with time, different per dataset index. */
static uint8_t *make_frames(uint64_t index) {
  size_t n = (size_t)CLIP_FRAMES * CLIP_H * CLIP_W * 3;
  uint8_t *f = (uint8_t *)malloc(n);
  if (!f) return NULL;
  for (size_t t = 0; t < CLIP_FRAMES; t++)
    for (size_t y = 0; y < CLIP_H; y++)
      for (size_t x = 0; x < CLIP_W; x++)
        for (size_t c = 0; c < 3; c++)
          f[((t * CLIP_H + y) * CLIP_W + x) * 3 + c] = (uint8_t)(x + 2 * y + 5 * t + 60 * c + index);
  return f;
}

static double sum(const float *v, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; i++) s += v[i];
  return s;
}

int main(int argc, char **argv) {
  const char *path = argc > 1 ? argv[1] : "configs/kinetics_slowfast_8x8_r50_multigrid.json";
  int rc = 1;
  mg_schedule *schedule = NULL;
  mg_plan *plan = NULL;
  mg_step step;
  uint64_t *indices = NULL;
  mg_clip *clips = NULL;
  float *slow = NULL, *fast = NULL;
  size_t n = 0, slow_len = 0, fast_len = 0;
  mg_status st;

  char *json = read_file(path);
  if (!json) { fprintf(stderr, "cannot read %s\n", path); return 1; }
  st = mg_schedule_new(json, &schedule);
  free(json);
  if (st != MG_STATUS_OK) return fail("mg_schedule_new", st);
  if ((st = mg_plan_new(schedule, 240000, 64, 0, 7, &plan)) != MG_STATUS_OK) { fail("mg_plan_new", st); goto done; }
  if ((st = mg_collate_set_num_threads(2)) != MG_STATUS_OK) { fail("mg_collate_set_num_threads", st); goto done; }

  for (uint64_t k = 0; k < 3; k++) {
    if ((st = mg_plan_step(plan, k, &step)) != MG_STATUS_OK) { fail("mg_plan_step", st); goto done; }
    indices = (uint64_t *)realloc(indices, step.batch_size * sizeof *indices);
    clips = (mg_clip *)calloc(step.batch_size, sizeof *clips);
    if (!indices || !clips) goto done;
    if ((st = mg_plan_step_indices(plan, k, indices, step.batch_size, &n)) != MG_STATUS_OK) { fail("mg_plan_step_indices", st); goto done; }
    for (size_t i = 0; i < n; i++) {
      clips[i].frames = make_frames(indices[i]);
      clips[i].num_frames = CLIP_FRAMES;
      clips[i].height = CLIP_H;
      clips[i].width = CLIP_W;
      if (!clips[i].frames) goto done;
    }
    if ((st = mg_collate_step_len(plan, k, ALPHA, &slow_len, &fast_len)) != MG_STATUS_OK) { fail("mg_collate_step_len", st); goto done; }
    slow = (float *)malloc(slow_len * sizeof *slow);
    fast = (float *)malloc(fast_len * sizeof *fast);
    if (!slow || !fast) goto done;
    st = mg_collate_step(plan, k, clips, n, ALPHA, slow, slow_len, fast, fast_len);
    for (size_t i = 0; i < n; i++) free((void *)clips[i].frames);
    free(clips);
    clips = NULL;
    if (st != MG_STATUS_OK) { fail("mg_collate_step", st); goto done; }
    printf("step %llu: slow [%u, 3, %u, %u, %u] fast [%u, 3, %u, %u, %u] mean %.4f\n",
           (unsigned long long)k, (unsigned)n, (unsigned)(step.num_frames / ALPHA), (unsigned)step.crop_size,
           (unsigned)step.crop_size, (unsigned)n, (unsigned)step.num_frames, (unsigned)step.crop_size,
           (unsigned)step.crop_size, sum(fast, fast_len) / (double)fast_len);
    free(slow);
    free(fast);
    slow = fast = NULL;
  }

  {
    /* One clip, explicit parameters: frames 0, 2, 4, 7; short side 128; crop 64 at (10, 20). */
    uint8_t *frames = make_frames(0);
    if (!frames) goto done;
    mg_clip clip = {frames, CLIP_FRAMES, CLIP_H, CLIP_W};
    mg_clip_params p = {0, 2, 128, 10, 20, false};
    const float mean[3] = {0.45f, 0.45f, 0.45f}, stdv[3] = {0.225f, 0.225f, 0.225f};
    size_t len = 3 * 4 * 64 * 64;
    float *out = (float *)malloc(len * sizeof *out);
    if (!out) { free(frames); goto done; }
    st = mg_collate_explicit(&clip, &p, 1, 4, 64, mean, stdv, out, len);
    if (st == MG_STATUS_OK) printf("explicit: [1, 3, 4, 64, 64] first %.4f mean %.4f\n", out[0], sum(out, len) / (double)len);
    else fail("mg_collate_explicit", st);
    p.crop_x = 200; /* the resized frame is 170 wide */
    st = mg_collate_explicit(&clip, &p, 1, 4, 64, mean, stdv, out, len);
    char msg[256];
    mg_last_error_message(msg, sizeof msg);
    printf("crop outside -> %s: %s\n", mg_status_str(st), msg);
    free(out);
    free(frames);
  }
  rc = 0;

done:
  free(slow);
  free(fast);
  free(clips);
  free(indices);
  mg_plan_free(plan);
  mg_schedule_free(schedule);
  return rc;
}
