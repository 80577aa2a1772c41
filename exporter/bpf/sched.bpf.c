// ksense kernel side: run-queue latency, D-state duration and NET_RX softirq time.
//
// Why it looks like this (docs/design.md#kernel-signals):
// - Tracepoints only, fields from tracefs (bcc generates struct tracepoint__<cat>__<event>
//   from the running kernel's format files); task_struct is never read because the headers
//   bcc compiles against need not match the running kernel.
// - The programs are plain named functions taking those generated structs rather than
//   TRACEPOINT_PROBE(...): bcc auto-attaches every `tracepoint__*` function when the module
//   loads and aborts the whole load if one attach fails; named functions let the loader attach
//   each tracepoint on its own and report which ones failed.
// - No hash maps on the hot path (a hash update+lookup+delete costs ~560 ns here). Timestamps
//   live in direct-mapped arrays indexed by `pid & (TS_SLOTS - 1)`; each slot packs
//   `(pid << 42) | (ts & (2^42 - 1))` so one 64-bit compare-and-swap publishes it, 0 = empty.
//   Runq slots hold ns (2^42 ns = 73 min wrap), D-state slots hold ns >> 10 (~µs, 52 days).
//   Deltas are taken modulo 2^42; a delta in the upper half means the clock went backwards.
// - Counters are cumulative and only ever incremented with atomic adds; user space mmaps the
//   maps (BPF_F_MMAPABLE) and takes deltas between reads, never read-then-clear.
//
// Compile-time parameters (cflags from loader.py): TS_SLOTS (power of two), TASK_REPORT_MAX
// (parsed from the sched_switch format), HIST_NKEYS (must match exporter/core/histogram.py).
// With POD_SLOTS defined (per-pod accounting on; KSENSE_POD_METRICS) also POD_CG_SLOTS and
// POD_CG_PROBES, and the per-pod code below is compiled in; without it none of it exists, so
// "off" costs nothing on the hot path.
//
// Per-pod accounting (docs/design.md#per-pod-attribution), without reading task_struct:
// - At switch-out the task leaving the CPU is `current`, so bpf_get_current_cgroup_id() is its
//   cgroup v2 id (the directory's inode number). User space keeps `pod_keys`, an open-addressed
//   table of the cgroups of the pods it found (every directory of a pod's subtree), each entry
//   `(cgroup_id << 16) | pod_slot`, 0 = empty, POD_TOMBSTONE = deleted; the program probes at
//   most POD_CG_PROBES entries. A hit is remembered per task in `task_pod` (same slot index as
//   the timestamp tables: `(pid << 32) | (pod_slot + 1)`).
// - Every task that waits was switched out before (preempted, or asleep until woken), so when a
//   run-queue wait ends (switch-in) or a D-state episode ends (wakeup) its pod is in `task_pod`;
//   the delta goes to that pod's row of `pod_stats` too. A task never switched out yet (a new
//   task's first wait) is not attributed.
// - The kernel never allocates: user space owns the table, writes it through the mmap, frees a
//   removed pod's entries and zeroes its row. More pods than POD_SLOTS is user space's overflow.

#define BPF_F_MMAPABLE_FLAG (1U << 10)

#define TS_BITS 42
#define TS_MASK ((1ULL << TS_BITS) - 1)
#define TS_HALF (1ULL << (TS_BITS - 1))
#define DSTATE_SHIFT 10

#define SUB_BITS 4
#define OCTAVES 32
#define OVERFLOW_KEY (1 + OCTAVES * (1 << SUB_BITS))
#if HIST_NKEYS != OVERFLOW_KEY + 1
#error "HIST_NKEYS does not match the log-linear layout of exporter/core/histogram.py"
#endif

#define TASK_UNINTERRUPTIBLE 0x2
#define NET_RX_SOFTIRQ 3

enum hist_id { HIST_RUNQ = 0, HIST_DSTATE = 1, HIST_SOFTIRQ = 2, NHIST = 3 };

// One row per histogram; loader.py reads the same layout as a (NHIST, 3 + HIST_NKEYS) u64 array.
struct hist {
    u64 sum_ns;          // exact sum of the recorded deltas
    u64 dropped;         // samples that could not be timed (evicted slot, clock backwards)
    u64 update_failures; // inserts that found their slot held by another live task
    u64 buckets[HIST_NKEYS];
};

BPF_F_TABLE("array", u32, struct hist, hists, NHIST, BPF_F_MMAPABLE_FLAG);
BPF_F_TABLE("array", u32, u64, runq_ts, TS_SLOTS, BPF_F_MMAPABLE_FLAG);
BPF_F_TABLE("array", u32, u64, dstate_ts, TS_SLOTS, BPF_F_MMAPABLE_FLAG);
// Softirqs do not nest on one CPU, so one per-CPU slot holds the running NET_RX entry time.
BPF_PERCPU_ARRAY(softirq_ts, u64, 1);

// floor(log2 v) for v >= 1 by binary search on the bit position, without branches
// (bcc's bpf_log2l returns floor(log2 v) + 1, the prototype's bug).
static __always_inline u32 floor_log2_u32(u32 v)
{
    u32 r, shift;

    r = (u32)(v > 0xFFFF) << 4;
    v >>= r;
    shift = (u32)(v > 0xFF) << 3;
    v >>= shift;
    r |= shift;
    shift = (u32)(v > 0xF) << 2;
    v >>= shift;
    r |= shift;
    shift = (u32)(v > 0x3) << 1;
    v >>= shift;
    r |= shift;
    return r | (v >> 1);
}

// Log-linear key of v µs: 0 for v == 0; 1 + 16 b + sub with b = floor(log2 v) and
// sub = floor(16 (v - 2^b) / 2^b) = ((v << 4) >> b) - 16 for 1 <= v < 2^32; OVERFLOW_KEY above.
static __always_inline u32 hist_key(u64 us)
{
    if (us == 0)
        return 0;
    if (us >> 32)
        return OVERFLOW_KEY;
    u32 b = floor_log2_u32((u32)us);
    return 1 + (b << SUB_BITS) + (u32)((us << SUB_BITS) >> b) - (1 << SUB_BITS);
}

static __always_inline struct hist *hist_of(u32 id)
{
    return hists.lookup(&id);
}

static __always_inline void record(struct hist *h, u64 delta_ns)
{
    u64 key = hist_key(delta_ns / 1000);

    // Never true, but the verifier needs the bound on the very register used as the index;
    // the empty asm stops clang from testing a copy instead.
    asm volatile("" : "+r"(key));
    if (key > OVERFLOW_KEY)
        return;
    __sync_fetch_and_add(&h->buckets[key], 1);
    __sync_fetch_and_add(&h->sum_ns, delta_ns);
}

static __always_inline u64 pack(u32 pid, u64 ts)
{
    return ((u64)pid << TS_BITS) | (ts & TS_MASK);
}

static __always_inline u32 slot_of(u32 pid)
{
    return pid & (TS_SLOTS - 1);
}

static __always_inline void count_lost(struct hist *h)
{
    __sync_fetch_and_add(&h->update_failures, 1);
    __sync_fetch_and_add(&h->dropped, 1);
}

// Store `packed` for `pid`. A slot held by the same pid is kept when `keep_same` (a wakeup of a
// task already waiting keeps its earlier enqueue time); a slot held by another task is
// overwritten and that task's sample is lost, counted as an update failure and a drop. The store
// is a compare-and-swap against what was read: another CPU may store into the same slot in
// between, and a plain store would erase its sample uncounted. When the swap fails, this sample
// is the one lost, counted the same way (no retry: the slot is contended right now).
static __always_inline void ts_insert(u64 *slot, struct hist *h, u32 pid, u64 packed, int keep_same)
{
    u64 old = *slot;
    int other = old && (u32)(old >> TS_BITS) != pid;

    if (old && !other && keep_same)
        return;
    if (__sync_val_compare_and_swap(slot, old, packed) != old || other)
        count_lost(h);
}

// Finish the episode stored in `slot` for `pid` at `now` (same units as the slot), if any:
// delta (mod 2^42) times `unit_ns` into the histogram, then clear the slot unless another task
// took it in the meantime (compare-and-swap).
// Returns the recorded delta in ns plus one, 0 when nothing was recorded.
static __always_inline u64 ts_finish(u64 *slot, struct hist *h, u32 pid, u64 now, u32 unit_shift)
{
    u64 val = *slot;
    u64 done = 0;

    if (!val || (u32)(val >> TS_BITS) != pid)
        return 0;
    u64 delta = (now - val) & TS_MASK;
    if (delta >= TS_HALF) {
        __sync_fetch_and_add(&h->dropped, 1);
    } else {
        record(h, delta << unit_shift);
        done = (delta << unit_shift) + 1;
    }
    __sync_val_compare_and_swap(slot, val, 0);
    return done;
}

// Clear `slot` if it still holds `pid` (the task is gone or no longer waits for a CPU).
static __always_inline void ts_forget(u64 *slot, u32 pid)
{
    u64 val = *slot;

    if (val && (u32)(val >> TS_BITS) == pid)
        __sync_val_compare_and_swap(slot, val, 0);
}

#ifdef POD_SLOTS
#define POD_NBUCKETS 24
#define POD_TOMBSTONE 0xFFFFULL
#define POD_HASH_MUL 0x9E3779B97F4A7C15ULL

// One row per pod slot; loader.py reads the same layout as a (POD_SLOTS, 4 + POD_NBUCKETS) u64
// array. Bucket 0: < 1 µs; bucket k: [2^(k-1), 2^k) µs; the last bucket is open-ended.
struct pod_row {
    u64 runq_sum_ns;
    u64 runq_count;
    u64 dstate_sum_ns;
    u64 dstate_count;
    u64 runq_buckets[POD_NBUCKETS];
};

BPF_F_TABLE("array", u32, u64, pod_keys, POD_CG_SLOTS, BPF_F_MMAPABLE_FLAG);
BPF_F_TABLE("array", u32, struct pod_row, pod_stats, POD_SLOTS, BPF_F_MMAPABLE_FLAG);
BPF_F_TABLE("array", u32, u64, task_pod, TS_SLOTS, BPF_F_MMAPABLE_FLAG);

// pod_slot + 1 of the current task's cgroup, 0 when it is not a registered pod cgroup.
static __always_inline u32 current_pod(void)
{
    u64 cg = bpf_get_current_cgroup_id();
    u32 h = (u32)((cg * POD_HASH_MUL) >> 32);

#pragma unroll
    for (u32 i = 0; i < POD_CG_PROBES; i++) {
        u32 idx = (h + i) & (POD_CG_SLOTS - 1);
        u64 *e = pod_keys.lookup(&idx);
        if (!e)
            return 0;
        u64 v = *e;
        if (!v)
            return 0;
        if ((v >> 16) == cg)
            return (u32)(v & 0xFFFF) + 1;
    }
    return 0;
}

// Remember (or forget) the pod of `pid`, which is `current` (switch-out).
static __always_inline void note_pod(u32 pid, u32 idx)
{
    u64 *tp = task_pod.lookup(&idx);
    if (!tp)
        return;
    u32 pod = current_pod();
    u64 old = *tp;
    if (pod) {
        u64 want = ((u64)pid << 32) | pod;
        if (old != want)
            *tp = want;
    } else if (old && (u32)(old >> 32) == pid) {
        *tp = 0;
    }
}

static __always_inline struct pod_row *pod_row_of(u32 pid, u32 idx)
{
    u64 *tp = task_pod.lookup(&idx);
    if (!tp)
        return 0;
    u64 v = *tp;
    if (!v || (u32)(v >> 32) != pid)
        return 0;
    u32 slot = (u32)v - 1;
    return pod_stats.lookup(&slot);
}

static __always_inline void pod_runq(u32 pid, u32 idx, u64 delta_ns)
{
    struct pod_row *r = pod_row_of(pid, idx);
    if (!r)
        return;
    u64 us = delta_ns / 1000;
    u64 key = 0;
    if (us >> 32)
        key = POD_NBUCKETS - 1;
    else if (us)
        key = floor_log2_u32((u32)us) + 1;
    if (key > POD_NBUCKETS - 1)
        key = POD_NBUCKETS - 1;
    asm volatile("" : "+r"(key));
    if (key > POD_NBUCKETS - 1)
        return;
    __sync_fetch_and_add(&r->runq_buckets[key], 1);
    __sync_fetch_and_add(&r->runq_sum_ns, delta_ns);
    __sync_fetch_and_add(&r->runq_count, 1);
}

static __always_inline void pod_dstate(u32 pid, u32 idx, u64 delta_ns)
{
    struct pod_row *r = pod_row_of(pid, idx);
    if (!r)
        return;
    __sync_fetch_and_add(&r->dstate_sum_ns, delta_ns);
    __sync_fetch_and_add(&r->dstate_count, 1);
}

static __always_inline void pod_forget(u32 pid, u32 idx)
{
    u64 *tp = task_pod.lookup(&idx);
    if (tp && *tp && (u32)(*tp >> 32) == pid)
        *tp = 0;
}
#endif

static __always_inline void on_wakeup(u32 pid)
{
    if (!pid)
        return;
    u32 idx = slot_of(pid);
    u64 now = bpf_ktime_get_ns();

    u64 *dslot = dstate_ts.lookup(&idx);
    struct hist *dh = hist_of(HIST_DSTATE);
    if (dslot && dh) {
        u64 done = ts_finish(dslot, dh, pid, now >> DSTATE_SHIFT, DSTATE_SHIFT);
#ifdef POD_SLOTS
        if (done)
            pod_dstate(pid, idx, done - 1);
#endif
        (void)done;
    }

    u64 *rslot = runq_ts.lookup(&idx);
    struct hist *rh = hist_of(HIST_RUNQ);
    if (rslot && rh)
        ts_insert(rslot, rh, pid, pack(pid, now), 1);
}

int on_sched_wakeup(struct tracepoint__sched__sched_wakeup *args)
{
    on_wakeup(args->pid);
    return 0;
}

int on_sched_wakeup_new(struct tracepoint__sched__sched_wakeup_new *args)
{
    on_wakeup(args->pid);
    return 0;
}

int on_sched_switch(struct tracepoint__sched__sched_switch *args)
{
    u32 prev = args->prev_pid;
    u32 next = args->next_pid;
    long state = args->prev_state;
    u64 now = bpf_ktime_get_ns();
    struct hist *rh = hist_of(HIST_RUNQ);

    if (!rh)
        return 0;
    if (next) {
        u32 idx = slot_of(next);
        u64 *slot = runq_ts.lookup(&idx);
        if (slot) {
            u64 done = ts_finish(slot, rh, next, now, 0);
#ifdef POD_SLOTS
            if (done)
                pod_runq(next, idx, done - 1);
#endif
            (void)done;
        }
    }
    if (!prev)
        return 0;
    u32 idx = slot_of(prev);
#ifdef POD_SLOTS
    note_pod(prev, idx);
#endif
    u64 *slot = runq_ts.lookup(&idx);
    if (!slot)
        return 0;
    // Still runnable (no state bits below TASK_REPORT_MAX: plain preemption 0, or R+ =
    // TASK_REPORT_MAX alone): it waits on the run queue from now on.
    if ((state & (TASK_REPORT_MAX - 1)) == 0) {
        ts_insert(slot, rh, prev, pack(prev, now), 0);
        return 0;
    }
    // Going to sleep: a wakeup that raced with the task while it was still running may have
    // left a timestamp; drop it so the slot and the fill metric stay honest.
    ts_forget(slot, prev);
    if (state & TASK_UNINTERRUPTIBLE) {
        u64 *dslot = dstate_ts.lookup(&idx);
        struct hist *dh = hist_of(HIST_DSTATE);
        if (dslot && dh)
            ts_insert(dslot, dh, prev, pack(prev, now >> DSTATE_SHIFT), 0);
    }
    return 0;
}

int on_sched_process_exit(struct tracepoint__sched__sched_process_exit *args)
{
    u32 pid = args->pid;
    u32 idx = slot_of(pid);

    if (!pid)
        return 0;
    u64 *rslot = runq_ts.lookup(&idx);
    if (rslot)
        ts_forget(rslot, pid);
    u64 *dslot = dstate_ts.lookup(&idx);
    if (dslot)
        ts_forget(dslot, pid);
#ifdef POD_SLOTS
    pod_forget(pid, idx);
#endif
    return 0;
}

int on_softirq_entry(struct tracepoint__irq__softirq_entry *args)
{
    if (args->vec != NET_RX_SOFTIRQ)
        return 0;
    u32 zero = 0;
    u64 *ts = softirq_ts.lookup(&zero);
    if (ts)
        *ts = bpf_ktime_get_ns();
    return 0;
}

int on_softirq_exit(struct tracepoint__irq__softirq_exit *args)
{
    if (args->vec != NET_RX_SOFTIRQ)
        return 0;
    u32 zero = 0;
    u64 *ts = softirq_ts.lookup(&zero);
    struct hist *h = hist_of(HIST_SOFTIRQ);
    // An exit without an entry (attached mid-softirq) has no start time: skip it.
    if (!ts || !*ts || !h)
        return 0;
    u64 delta = bpf_ktime_get_ns() - *ts;
    *ts = 0;
    if ((s64)delta < 0)
        __sync_fetch_and_add(&h->dropped, 1);
    else
        record(h, delta);
    return 0;
}
