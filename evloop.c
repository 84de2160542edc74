/*
 * evloop.c: libvirt's event loop in C on libev, for Sys::Virt::Event::EV.
 *
 * libvirt is given six C functions (virEventRegisterImpl) that make and
 * change ev_io and ev_timer watchers on EV's default loop.  Whatever runs
 * that loop (EV::run, AnyEvent on EV, Mojo::Reactor::EV,
 * IO::Async::Loop::EV) then runs libvirt's events, and no Perl runs per
 * event but the program's own callbacks.  EV's API is a table of function
 * pointers read from $EV::API (EV/EVAPI.h); this is the only file that
 * includes that header, which declares the table's pointer static.
 *
 * The loop keeps the rules every loop of this distribution keeps
 * (DESIGN.md):
 * - ERROR and HANGUP are reported on any watch whose mask is not 0.
 *   libev folds them into readiness, so a ready descriptor is asked
 *   what it really is with a zero-timeout poll().
 * - Mask 0 and interval -1 disable; interval 0 fires once per loop
 *   iteration (a one-shot timer of 0 s, armed again at each firing),
 *   without starving I/O; a new interval takes effect at once.
 * - A free function runs once, after removal, never inside libvirt's
 *   add, update or remove: removed records wait in a queue that the
 *   housekeeping watcher (an ev_prepare, at the start of each iteration)
 *   runs when no libvirt frame is below us.
 * - libvirt's callbacks run with a libvirt frame counted, so that Perl's
 *   signal handlers and exit wait until they return (Event.xs, section 5);
 *   what waited runs as soon as the frame is gone.
 * - Calls from a thread other than the registering interpreter's are
 *   refused, never served.
 * - After fork, the child's copy of EV's loop is told so (ev_loop_fork,
 *   which makes it leave the parent's epoll set alone), and the watches
 *   and timers inherited from the parent are stopped there, silent.
 *
 * A record lives from libvirt's add to the run of its free function:
 *
 *   live --remove--> removed (stopped, in the free queue) --free--> gone
 *
 * Only the free queue ends a record, and it never runs while a libvirt
 * frame is below us: a callback that removes its own watch still has
 * its record when it returns.  libev forgets a stopped watcher's pending
 * event, so nothing in libev points at a removed record.
 */
#define PERL_NO_GET_CONTEXT
#define NO_XSLOCKS              /* for dXCPT and friends (perlguts) */
#include "EVAPI.h"

#include <poll.h>
#include <libvirt/libvirt.h>

#include "idmap.h"
#include "sve.h"

typedef struct sve_ev_record sve_ev_record;

struct sve_ev_record {
    union {                     /* first: a watcher is its record */
        ev_io io;
        ev_timer timer;
    } w;
    sve_kind kind;
    int id;
    int value;                  /* libvirt's mask or interval */
    bool removed;
    int fork_generation;        /* see sve_fork_generation */
    union {
        virEventHandleCallback handle;
        virEventTimeoutCallback timeout;
    } cb;
    void *opaque;
    virFreeCallback ff;
    sve_ev_record *next_free;
};

/* One loop per process, as libvirt takes one registration per process. */
static struct {
    PerlInterpreter *perl;      /* the interpreter libvirt may call into */
    bool retired;               /* ... which has gone away */
    int *libvirt_frames;        /* its MY_CXT.libvirt_frames */
    int next_id[2];             /* per sve_kind */
    sve_idmap records[2];       /* live records by id, per sve_kind */
    sve_ev_record *free_head;   /* removed records, their frees due */
    sve_ev_record *free_tail;
    int pending_frees;
    bool holding_loop;          /* an ev_ref for the frees waiting */
    int zero_timers;            /* live timers of interval 0 */
    int fork_generation;        /* the process the watchers are for */
    ev_prepare housekeeping;
} sve_ev;

#define SVE_EV_LOOP EV_DEFAULT_UC
#define SVE_EV_RW (VIR_EVENT_HANDLE_READABLE | VIR_EVENT_HANDLE_WRITABLE)

/* The registering interpreter, when the calling thread runs it; else the
 * call is refused (said once, unless that interpreter is gone). */
#ifdef MULTIPLICITY
# define SVE_EV_ENTER(what, fail)                               \
    PerlInterpreter *my_perl = PERL_GET_THX;                    \
    if (UNLIKELY(!my_perl || my_perl != sve_ev.perl)) {         \
        if (!sve_ev.retired)                                    \
            sve_refuse_foreign(what);                           \
        fail;                                                   \
    }
#else
# define SVE_EV_ENTER(what, fail)                               \
    if (UNLIKELY(sve_ev.retired)) {                             \
        fail;                                                   \
    }
#endif

/* ------------------------------------------------------------------ */
/* calling libvirt's callbacks                                         */
/* ------------------------------------------------------------------ */

/*
 * Calls REC's callback with a libvirt frame counted.  An exception from
 * a Perl callback that libvirt's callback called without an eval (a
 * Sys::Virt callback registered unprotected) is caught for a moment to
 * restore the count, then passed on.  A public watch's or timer's
 * coderef is called directly: that call is under G_EVAL already.
 */
static void
sve_ev_call(pTHX_ sve_ev_record *rec, int fd, int events)
{
    dXCPT;

    (*sve_ev.libvirt_frames)++;
    if (rec->kind == SVE_KIND_HANDLE ? rec->cb.handle == sve_public_handle_cb
        : rec->cb.timeout == sve_public_timeout_cb) {
        sve_public_call(aTHX_ (sve_public *)rec->opaque,
                        rec->kind == SVE_KIND_HANDLE ? 3 : 1, rec->id, fd, events);
        (*sve_ev.libvirt_frames)--;
        return;
    }
    XCPT_TRY_START {
        if (rec->kind == SVE_KIND_HANDLE)
            rec->cb.handle(rec->id, fd, events, rec->opaque);
        else
            rec->cb.timeout(rec->id, rec->opaque);
    } XCPT_TRY_END
    (*sve_ev.libvirt_frames)--;
    XCPT_CATCH {
        XCPT_RETHROW;
    }
}

/* Back at the program's level: the signal handlers (and an exit) that
 * waited for libvirt run now, as they would at Perl's next statement. */
PERL_STATIC_INLINE void
sve_ev_signals_due(pTHX)
{
    if (UNLIKELY(PL_sig_pending) && *sve_ev.libvirt_frames == 0)
        PL_signalhook(aTHX);
}

/* A record the parent registered, in a forked child: silent here. */
static void
sve_ev_silence(sve_ev_record *rec)
{
    if (rec->kind == SVE_KIND_HANDLE) {
        ev_io_stop(SVE_EV_LOOP, &rec->w.io);
    } else {
        ev_timer_stop(SVE_EV_LOOP, &rec->w.timer);
        if (rec->value == 0)
            sve_ev.zero_timers--;
        rec->value = -1;
    }
}

/* Readiness as libvirt names it, for a watch of mask MASK. */
static int
sve_ev_poll_events(int fd, int mask)
{
    struct pollfd p;
    int events = 0;

    p.fd = fd;
    p.events = ((mask & VIR_EVENT_HANDLE_READABLE) ? POLLIN : 0) |
        ((mask & VIR_EVENT_HANDLE_WRITABLE) ? POLLOUT : 0);
    p.revents = 0;
    if (poll(&p, 1, 0) <= 0)
        return 0;
    if (p.revents & POLLIN)
        events |= VIR_EVENT_HANDLE_READABLE;
    if (p.revents & POLLOUT)
        events |= VIR_EVENT_HANDLE_WRITABLE;
    if (p.revents & (POLLERR | POLLNVAL))
        events |= VIR_EVENT_HANDLE_ERROR;
    if (p.revents & POLLHUP)
        events |= VIR_EVENT_HANDLE_HANGUP;
    return events;
}

static void
sve_ev_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    sve_ev_record *rec = (sve_ev_record *)w;
    int events;
    SVE_EV_ENTER("a watch's callback", ev_io_stop(loop, w); return);

    if (UNLIKELY(rec->fork_generation != sve_fork_generation)) {
        sve_ev_silence(rec);
        return;
    }
    if (UNLIKELY(revents & EV_ERROR)) {
        /* libev found the descriptor bad, and stopped the watcher */
        events = VIR_EVENT_HANDLE_ERROR;
    } else {
        events = sve_ev_poll_events(w->fd, rec->value);
        if (!events) {
            /* A mask of only ERROR or HANGUP waits for readability (libev
             * has nothing closer): readable without either, the watch
             * sleeps until its mask is next set, rather than spin. */
            if (!(rec->value & SVE_EV_RW))
                ev_io_stop(loop, w);
            return;
        }
    }
    sve_ev_call(aTHX_ rec, w->fd, events);
    sve_ev_signals_due(aTHX);
}

static void
sve_ev_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    sve_ev_record *rec = (sve_ev_record *)w;
    SVE_EV_ENTER("a timer's callback", ev_timer_stop(loop, w); return);

    PERL_UNUSED_ARG(revents);
    if (UNLIKELY(rec->fork_generation != sve_fork_generation)) {
        sve_ev_silence(rec);
        return;
    }
    /* interval 0: once per iteration, armed again for the next one
     * before the call, which may change or remove it (or die through) */
    if (rec->value == 0) {
        ev_timer_set(w, 0., 0.);
        ev_timer_start(loop, w);
    }
    sve_ev_call(aTHX_ rec, -1, 0);
    sve_ev_signals_due(aTHX);
}

/* ------------------------------------------------------------------ */
/* the free queue, and housekeeping                                    */
/* ------------------------------------------------------------------ */

/* live -> removed: stopped, and queued for its free.  The loop is held
 * (ev_ref) while frees wait, so that it runs once more to do them. */
static void
sve_ev_remove(sve_ev_record *rec)
{
    if (rec->kind == SVE_KIND_HANDLE) {
        ev_io_stop(SVE_EV_LOOP, &rec->w.io);
    } else {
        ev_timer_stop(SVE_EV_LOOP, &rec->w.timer);
        if (rec->value == 0)
            sve_ev.zero_timers--;
    }
    rec->removed = TRUE;
    rec->next_free = NULL;
    if (sve_ev.free_tail)
        sve_ev.free_tail->next_free = rec;
    else
        sve_ev.free_head = rec;
    sve_ev.free_tail = rec;
    sve_ev.pending_frees++;
    if (!sve_ev.holding_loop) {
        sve_ev.holding_loop = TRUE;
        ev_ref(SVE_EV_LOOP);
    }
}

/* removed -> gone.  A free function may call back into libvirt, and
 * libvirt into us: what that queues waits for this loop. */
void
sve_ev_run_frees(pTHX)
{
    PERL_UNUSED_CONTEXT;
    while (*sve_ev.libvirt_frames == 0 && sve_ev.free_head) {
        sve_ev_record *rec = sve_ev.free_head;
        virFreeCallback ff = rec->ff;
        void *opaque = rec->opaque;

        sve_ev.free_head = rec->next_free;
        if (!sve_ev.free_head)
            sve_ev.free_tail = NULL;
        sve_ev.pending_frees--;
        Safefree(rec);
        if (ff) {
            (*sve_ev.libvirt_frames)++;
            ff(opaque);
            (*sve_ev.libvirt_frames)--;
        }
    }
    if (!sve_ev.free_head && sve_ev.holding_loop) {
        sve_ev.holding_loop = FALSE;
        ev_unref(SVE_EV_LOOP);
    }
}

/* The watchers a forked child inherited: stopped in the child's copy of
 * the loop (which ev_loop_fork keeps off the parent's epoll set). */
static void
sve_ev_silence_inherited(void)
{
    int kind;
    size_t i;

    for (kind = SVE_KIND_HANDLE; kind <= SVE_KIND_TIMEOUT; kind++) {
        sve_idmap *map = &sve_ev.records[kind];

        for (i = 0; i < map->cap; i++) {
            sve_ev_record *rec = (sve_ev_record *)map->vals[i];

            if (map->keys[i] > 0 && rec->fork_generation != sve_fork_generation)
                sve_ev_silence(rec);
        }
    }
    sve_ev.fork_generation = sve_fork_generation;
}

/*
 * At the start of every loop iteration, before it waits: the inherited
 * watchers of a fresh child go quiet, due frees run, and signal handlers
 * that interrupted the wait run (nothing else would run them until the
 * loop returned to Perl).  It does not keep the loop alive (ev_unref).
 */
static void
sve_ev_housekeeping(struct ev_loop *loop, ev_prepare *w, int revents)
{
#ifdef MULTIPLICITY
    PerlInterpreter *my_perl = PERL_GET_THX;

    if (!my_perl || my_perl != sve_ev.perl)
        return;
#endif
    PERL_UNUSED_ARG(loop);
    PERL_UNUSED_ARG(w);
    PERL_UNUSED_ARG(revents);
    if (UNLIKELY(sve_ev.fork_generation != sve_fork_generation))
        sve_ev_silence_inherited();
    if (*sve_ev.libvirt_frames == 0) {
        if (sve_ev.free_head)
            sve_ev_run_frees(aTHX);
        sve_ev_signals_due(aTHX);
    }
}

/* ------------------------------------------------------------------ */
/* the six functions libvirt calls                                     */
/* ------------------------------------------------------------------ */

static sve_ev_record *
sve_ev_new_record(sve_kind kind, void *opaque, virFreeCallback ff)
{
    sve_ev_record *rec;

    Newxz(rec, 1, sve_ev_record);
    rec->kind = kind;
    rec->opaque = opaque;
    rec->ff = ff;
    rec->fork_generation = sve_fork_generation;
    do {
        if (++sve_ev.next_id[kind] <= 0)
            sve_ev.next_id[kind] = 1;       /* wrapped round */
    } while (sve_idmap_get(&sve_ev.records[kind], sve_ev.next_id[kind]));
    rec->id = sve_ev.next_id[kind];
    sve_idmap_put(&sve_ev.records[kind], rec->id, rec);
    return rec;
}

/* Sets a watch's mask: the watcher waits for what it names, or stops. */
static void
sve_ev_set_mask(sve_ev_record *rec, int events)
{
    ev_io *w = &rec->w.io;
    int want = ((events & VIR_EVENT_HANDLE_READABLE) ? EV_READ : 0) |
        ((events & VIR_EVENT_HANDLE_WRITABLE) ? EV_WRITE : 0);

    if (!want && events)
        want = EV_READ;         /* ERROR or HANGUP alone: see sve_ev_io_cb */
    rec->value = events;
    if (ev_is_active(w)) {
        if ((w->events & (EV_READ | EV_WRITE)) == want)
            return;
        ev_io_stop(SVE_EV_LOOP, w);
    }
    if (want) {
        ev_io_modify(w, want);
        ev_io_start(SVE_EV_LOOP, w);
    }
}

/* Sets a timer's interval: -1 stops it, a positive one restarts it from
 * now, 0 fires at the next iteration (and each one after). */
static void
sve_ev_set_interval(sve_ev_record *rec, int ms)
{
    ev_timer *w = &rec->w.timer;

    if (ms < 0)
        ms = -1;
    if (ms == rec->value && ms <= 0 && (ms < 0 || ev_is_active(w)))
        return;
    sve_ev.zero_timers += (ms == 0) - (rec->value == 0);
    rec->value = ms;
    ev_timer_stop(SVE_EV_LOOP, w);
    if (ms < 0)
        return;
    if (ms > 0)
        ev_now_update(SVE_EV_LOOP);     /* from now, not the iteration's start */
    ev_timer_set(w, ms / 1000., ms / 1000.);
    ev_timer_start(SVE_EV_LOOP, w);
}

static int
sve_ev_add_handle(int fd, int events, virEventHandleCallback cb,
                  void *opaque, virFreeCallback ff)
{
    sve_ev_record *rec;
    SVE_EV_ENTER("add_handle", return -1);

    if (fd < 0) {
        sve_note_failure(aTHX_ "Sys::Virt::Event::EV: add_handle: the "
                         "descriptor is negative");
        return -1;
    }
    rec = sve_ev_new_record(SVE_KIND_HANDLE, opaque, ff);
    rec->cb.handle = cb;
    ev_io_init(&rec->w.io, sve_ev_io_cb, fd, 0);
    sve_ev_set_mask(rec, events);
    return rec->id;
}

/* The record an update applies to, or NULL: unknown ids are ignored, as
 * libvirt's own loops do (libvirt updates -1 once keepalive stops); so
 * are the parent's, in a forked child. */
static sve_ev_record *
sve_ev_to_update(sve_kind kind, int id)
{
    sve_ev_record *rec = (sve_ev_record *)sve_idmap_get(&sve_ev.records[kind], id);

    return rec && rec->fork_generation == sve_fork_generation ? rec : NULL;
}

static void
sve_ev_update_handle(int watch, int events)
{
    sve_ev_record *rec;
    SVE_EV_ENTER("update_handle", return);

    if ((rec = sve_ev_to_update(SVE_KIND_HANDLE, watch)))
        sve_ev_set_mask(rec, events);
}

static int
sve_ev_remove_any(pTHX_ sve_kind kind, int id)
{
    sve_ev_record *rec = (sve_ev_record *)sve_idmap_delete(&sve_ev.records[kind], id);

    if (!rec) {
        sve_note_failure(aTHX_ kind == SVE_KIND_HANDLE
                         ? "Sys::Virt::Event::EV: no such watch"
                         : "Sys::Virt::Event::EV: no such timer");
        return -1;
    }
    sve_ev_remove(rec);
    return 0;
}

static int
sve_ev_remove_handle(int watch)
{
    SVE_EV_ENTER("remove_handle", return -1);

    return sve_ev_remove_any(aTHX_ SVE_KIND_HANDLE, watch);
}

static int
sve_ev_add_timeout(int ms, virEventTimeoutCallback cb, void *opaque,
                   virFreeCallback ff)
{
    sve_ev_record *rec;
    SVE_EV_ENTER("add_timeout", return -1);

    rec = sve_ev_new_record(SVE_KIND_TIMEOUT, opaque, ff);
    rec->cb.timeout = cb;
    rec->value = -1;
    ev_timer_init(&rec->w.timer, sve_ev_timer_cb, 0., 0.);
    sve_ev_set_interval(rec, ms);
    return rec->id;
}

static void
sve_ev_update_timeout(int timer, int ms)
{
    sve_ev_record *rec;
    SVE_EV_ENTER("update_timeout", return);

    if ((rec = sve_ev_to_update(SVE_KIND_TIMEOUT, timer)))
        sve_ev_set_interval(rec, ms);
}

static int
sve_ev_remove_timeout(int timer)
{
    SVE_EV_ENTER("remove_timeout", return -1);

    return sve_ev_remove_any(aTHX_ SVE_KIND_TIMEOUT, timer);
}

/* ------------------------------------------------------------------ */
/* what Event.xs calls (sve.h)                                         */
/* ------------------------------------------------------------------ */

const char *
sve_ev_attach(pTHX)
{
    SV *api = get_sv("EV::API", 0);

    if (!api || !SvIOK(api))
        return "EV is not loaded (use EV first)";
    if (!GEVAPI)
        I_EV_API("Sys::Virt::Event::EV");
    return NULL;
}

void
sve_ev_register(pTHX_ int *libvirt_frames)
{
    sve_ev.perl = aTHX;
    sve_ev.libvirt_frames = libvirt_frames;
    sve_ev.fork_generation = sve_fork_generation;
    ev_prepare_init(&sve_ev.housekeeping, sve_ev_housekeeping);
    ev_prepare_start(SVE_EV_LOOP, &sve_ev.housekeeping);
    ev_unref(SVE_EV_LOOP);
    virEventRegisterImpl(sve_ev_add_handle, sve_ev_update_handle,
                         sve_ev_remove_handle, sve_ev_add_timeout,
                         sve_ev_update_timeout, sve_ev_remove_timeout);
}

void
sve_ev_retire(void)
{
    sve_ev.retired = TRUE;
    sve_ev.perl = NULL;
}

/* Only flags the loop: libev does the work at its next iteration. */
void
sve_ev_forked(void)
{
    if (GEVAPI && sve_ev.perl)
        ev_loop_fork(SVE_EV_LOOP);
}

void
sve_ev_ids(pTHX_ sve_kind kind, AV *out)
{
    sve_idmap *map = &sve_ev.records[kind];
    size_t i;

    for (i = 0; i < map->cap; i++) {
        if (map->keys[i] > 0)
            av_push(out, newSViv(map->keys[i]));
    }
}

int
sve_ev_pending_frees(void)
{
    return sve_ev.pending_frees;
}

int
sve_ev_zero_timers(void)
{
    return sve_ev.zero_timers;
}
