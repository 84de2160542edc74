/*
 * Event.xs: the glue between libvirt's event loop hooks and Perl.
 *
 * Sections, in order:
 *   1. per-interpreter state
 *   2. handle records and the Perl objects that stand for them
 *   3. argument checks shared by the XSUBs (used by the typemap)
 *   4. calling into Perl, and reporting errors
 *   5. what waits until libvirt has returned: signals, exit, frees
 *   6. trampolines: libvirt -> the registered Perl implementation
 *   7. public watches: Perl coderefs called by libvirt
 *   8. Sys::Virt's own callbacks, protected
 *   9. the XSUBs, and the helpers they share (Sys::Virt::Event::EV's last)
 *
 * The native loop, libvirt's hooks in C on libev (Sys::Virt::Event::EV),
 * is evloop.c; what the two share is declared in sve.h.
 *
 * The one rule behind most of this file: libvirt's C frames must never be
 * unwound by a Perl exception, and nothing that comes from Perl is trusted
 * before it has been checked.
 */
#define PERL_NO_GET_CONTEXT
#define NO_XSLOCKS              /* for dXCPT and friends (perlguts) */
#include "EXTERN.h"
#include "perl.h"
#include "XSUB.h"
#include "ppport.h"

#include <fcntl.h>
#include <pthread.h>
#include <limits.h>
#include <stdio.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "idmap.h"
#include "sve.h"

#define SVE_EVENT_MASK (VIR_EVENT_HANDLE_READABLE | VIR_EVENT_HANDLE_WRITABLE | \
                        VIR_EVENT_HANDLE_ERROR | VIR_EVENT_HANDLE_HANGUP)

/* ------------------------------------------------------------------ */
/* 1. per-interpreter state                                            */
/* ------------------------------------------------------------------ */

typedef enum {
    SVE_ROLE_CB = 1,
    SVE_ROLE_OPAQUE,
    SVE_ROLE_FF,
} sve_role;

typedef struct sve_record sve_record;

/* Which loop libvirt was given.  libvirt accepts one registration per
 * process and ignores the others, so this is process-wide, together with
 * the interpreter that made it: the only one libvirt may call into. */
typedef enum {
    SVE_LOOP_NONE,
    SVE_LOOP_PERL,
    SVE_LOOP_DEFAULT,
    SVE_LOOP_EV,                /* the native one, evloop.c */
} sve_loop;

static sve_loop sve_registered = SVE_LOOP_NONE;
#ifdef MULTIPLICITY
static PerlInterpreter *sve_owner;
#endif
static int sve_warned_foreign;
static int sve_registered_generation;   /* see sve_fork_generation */

/* Counts the forks this process descends from (pthread_atfork): what was
 * registered before a fork belongs to the parent, whose libvirt
 * connections the child must leave alone. */
volatile int sve_fork_generation;

static void sve_forks_publish(void);

static void
sve_atfork_child(void)
{
    sve_fork_generation++;
    sve_forks_publish();
#ifdef SVE_HAVE_EV
    if (sve_registered == SVE_LOOP_EV)
        sve_ev_forked();
#endif
}

#define MY_CXT_KEY "Sys::Virt::Event::_guts" XS_VERSION

/* The implementation's methods, resolved once and cached (see
 * sve_impl_method): one slot per trampoline. */
typedef enum {
    SVE_ADD_HANDLE, SVE_UPDATE_HANDLE, SVE_REMOVE_HANDLE,
    SVE_ADD_TIMEOUT, SVE_UPDATE_TIMEOUT, SVE_REMOVE_TIMEOUT,
    SVE_N_METHODS
} sve_method;

static const char *const sve_method_name[SVE_N_METHODS] = {
    "add_handle", "update_handle", "remove_handle",
    "add_timeout", "update_timeout", "remove_timeout",
};

typedef struct {
    CV *cv;                     /* counted reference, or NULL */
    HV *stash;                  /* the class it was resolved in */
    U32 gen;                    /* perl's method cache generation then */
} sve_method_cache;

#define SVE_N_SPARE_ARGS 5       /* the most a call takes: add_handle's */

typedef struct {
    SV *impl;                   /* the registered object (a reference) */
    sve_method_cache methods[SVE_N_METHODS];
    int libvirt_frames;         /* libvirt C frames below us (section 5) */
    int trampolines;            /* > 0 while libvirt is calling the loop */
    sve_record *pending_head;   /* frees waiting for a safe point */
    sve_record *pending_tail;
    int dispatching;            /* > 0 while the loop dispatches a callback */
    sve_record *updates;        /* updates libvirt made meanwhile */
    sve_idmap records[2];       /* live records by id, per sve_kind */
    sve_idmap publics[2];       /* public watches/timers by id, per sve_kind */
    SV *failure;                /* why the last trampoline returned -1 */
    SV *spare_args[SVE_N_SPARE_ARGS]; /* see sve_arg_take */
    bool destructing;           /* the interpreter is going away */
    /* held while a libvirt frame is below us (see sve_signal_hook) */
    bool exit_held;             /* exit() was called ... */
    int exit_status;            /* ... with this status */
    despatch_signals_proc_t next_signalhook; /* perl's, or another module's */
    int drain_timer;            /* the 0 ms timer asked for pending frees */
    SV *forks;                  /* $Sys::Virt::Event::FORKS */
} my_cxt_t;

START_MY_CXT

/* $Sys::Virt::Event::FORKS is sve_fork_generation, for loops written in
 * Perl: comparing it costs less than a getpid() ($$).  Set in the child
 * by pthread_atfork, in the interpreter that forked: the only one the
 * child has (none when a thread of libvirt's forked, to exec). */
static void
sve_forks_publish(void)
{
    dTHX;
#ifdef MULTIPLICITY
    if (!my_perl || my_cxt_index < 0 || my_cxt_index >= PL_my_cxt_size ||
        !PL_my_cxt_list[my_cxt_index])
        return;
#endif
    {
        dMY_CXT;

        if (MY_CXT.forks) {     /* read-only to Perl, not to us */
            (void)SvIOK_only(MY_CXT.forks);   /* drops a cached string */
            SvIV_set(MY_CXT.forks, sve_fork_generation);
        }
    }
}

static const char *const sve_kind_name[] = { "watch", "timer" };
static const char *const sve_role_name[] = { "", "callback", "opaque", "free-function" };

static void sve_signal_hook(pTHX);

/* A new interpreter's state; a clone's starts as a copy of its parent's,
 * whose signal hook it inherits together with perl's PL_signalhook. */
static void
sve_init_cxt(pTHX_ my_cxt_t *cxt)
{
    despatch_signals_proc_t inherited = cxt->next_signalhook;

    Zero(cxt, 1, my_cxt_t);
    cxt->failure = newSVpvs("");
    cxt->forks = get_sv("Sys::Virt::Event::FORKS", GV_ADD | GV_ADDMULTI);
    if (!SvREADONLY(cxt->forks)) {  /* a clone's is its parent's copy */
        sv_setiv(cxt->forks, sve_fork_generation);
        SvREADONLY_on(cxt->forks);
    }
    if (PL_signalhook == sve_signal_hook && inherited) {
        cxt->next_signalhook = inherited;
    } else {
        cxt->next_signalhook = PL_signalhook;
        PL_signalhook = sve_signal_hook;
    }
}

/* ------------------------------------------------------------------ */
/* 2. handle records                                                   */
/* ------------------------------------------------------------------ */

/*
 * One record per add_handle/add_timeout that libvirt made through the Perl
 * implementation.  The implementation receives three references ($cb,
 * $opaque, $ff) that lead to one anchor SV, which points at the record
 * through ext magic with our own vtable: that vtable, not a class name,
 * is what identifies them.
 *
 * A record stays allocated while any of these holds it: the anchor, the
 * id map (it is live), the pending-free queue.  So a stale handle always
 * points at valid memory and is recognised as removed.
 *
 * Its life, each arrow made by the one function named, and nowhere else:
 *
 *   ADDING --sve_record_added--> LIVE --sve_record_removed--> REMOVED
 *     |                                                          |
 *     | sve_record_add_failed                        sve_queue_free
 *     v                                                          v
 *   SETTLED <-----------------sve_run_pending------------- FREE_QUEUED
 *
 * and sve_record_settle, from any state to SETTLED, when the interpreter
 * is torn down (nothing more may run).  A removed record with nothing to
 * free goes straight to SETTLED.
 *
 *   state        in MY_CXT.records  dispatched  its free function
 *   ADDING       no                 skipped     -
 *   LIVE         yes                yes         must not run
 *   REMOVED      no                 skipped     runs once asked for (or
 *                                               once no holder is left)
 *   FREE_QUEUED  no (queued)        skipped     at the next safe point
 *   SETTLED      no                 skipped     ran, or never will
 */
typedef enum {
    SVE_ADDING,
    SVE_LIVE,
    SVE_REMOVED,
    SVE_FREE_QUEUED,
    SVE_SETTLED,
} sve_state;

struct sve_record {
    sve_kind kind;
    sve_state state;
    int id;                     /* 0 until the implementation's add returned */
    int fd;                     /* watches only */
    int fork_generation;        /* sve_fork_generation when it was added */
    unsigned holders;           /* anchors, and holds our own code takes */
    bool update_queued;         /* in the deferred-update list */
    int loop_value;             /* mask or interval the loop last heard of */
    int wanted_value;           /* ... and the one libvirt asked for since */
    union {
        virEventHandleCallback handle;
        virEventTimeoutCallback timeout;
    } cb;
    void *opaque;
    virFreeCallback ff;
    sve_record *next_pending;
    sve_record *next_update;
};

static void
sve_record_release(sve_record *rec)
{
    if (rec->holders == 0 && rec->state != SVE_LIVE && rec->state != SVE_FREE_QUEUED)
        Safefree(rec);
}

static void sve_queue_free(pTHX_ sve_record *rec);

/* ADDING -> LIVE: the implementation's add returned ID. */
static void
sve_record_added(pTHX_ sve_record *rec, int id, int loop_value)
{
    dMY_CXT;

    rec->id = id;
    rec->loop_value = loop_value;
    rec->state = SVE_LIVE;
    sve_idmap_put(&MY_CXT.records[rec->kind], id, rec);
}

/* ADDING -> SETTLED: libvirt releases the opaque of a failed add itself,
 * and a dispatch of the handles the implementation kept is a no-op. */
static void
sve_record_add_failed(sve_record *rec)
{
    rec->state = SVE_SETTLED;
    rec->ff = NULL;
    rec->opaque = NULL;
}

/* LIVE -> REMOVED, or SETTLED when there is nothing to free.  The caller
 * has taken it out of MY_CXT.records. */
static void
sve_record_removed(sve_record *rec)
{
    rec->state = rec->ff ? SVE_REMOVED : SVE_SETTLED;
}

/* Any state -> SETTLED, at teardown: its free function never runs. */
static void
sve_record_settle(sve_record *rec)
{
    rec->state = SVE_SETTLED;
    sve_record_release(rec);
}

/*
 * Drops one hold on a record (its anchor, or one taken for a while by our
 * own code).  When the last goes from a removed record whose free nobody
 * asked for, nobody can any more: the queue does it (but nothing runs
 * once the interpreter is being destroyed).
 */
static void
sve_record_unhold(pTHX_ sve_record *rec)
{
    if (--rec->holders == 0 && rec->state == SVE_REMOVED) {
        dMY_CXT;

        if (MY_CXT.destructing)
            rec->state = SVE_SETTLED;
        else
            sve_queue_free(aTHX_ rec);
    }
    sve_record_release(rec);
}

static int
sve_mg_free(pTHX_ SV *sv, MAGIC *mg)
{
    sve_record *rec = (sve_record *)mg->mg_ptr;

    PERL_UNUSED_ARG(sv);
    if (!rec)                   /* a copy made for another thread */
        return 0;
    mg->mg_ptr = NULL;
    sve_record_unhold(aTHX_ rec);
    return 0;
}

#ifdef USE_ITHREADS
/* A new thread gets copies of the handle objects.  They must not share
 * the record (its counts are not atomic, and libvirt only calls the
 * registering interpreter), so the copies are detached and refused. */
static int
sve_mg_dup(pTHX_ MAGIC *mg, CLONE_PARAMS *param)
{
    PERL_UNUSED_ARG(param);
    mg->mg_ptr = NULL;
    return 0;
}
#endif

static MGVTBL sve_vtbl = {
    NULL, NULL, NULL, NULL, sve_mg_free, NULL,
#ifdef USE_ITHREADS
    sve_mg_dup,
#else
    NULL,
#endif
    NULL,
};

/*
 * What the three handles of a record refer to.  They share one anchor SV
 * carrying the magic, and a handle's role is the number of references
 * between it and the anchor: $cb -> anchor, $opaque -> link -> anchor,
 * $ff -> link' -> link -> anchor (the two chains share their last link).
 * The links are read-only, so a chain built in Perl (\$cb) is not taken
 * for a handle.  Unblessed: blessing would make every add and free pay
 * for a DESTROY lookup.  The caller owns one reference to each target,
 * for the handle it makes of it (see sve_arg_rv_noinc).
 */
static void
sve_handle_targets(pTHX_ sve_record *rec, SV **targets)
{
    SV *anchor = newSV_type(SVt_PVMG);
    MAGIC *mg = sv_magicext(anchor, NULL, PERL_MAGIC_ext, &sve_vtbl,
                            (const char *)rec, 0);
    SV *link, *ff_link;

#ifdef USE_ITHREADS
    mg->mg_flags |= MGf_DUP;
#else
    PERL_UNUSED_VAR(mg);
#endif
    SvREADONLY_on(anchor);
    rec->holders++;
    link = newRV_inc(anchor);
    SvREADONLY_on(link);
    ff_link = newRV_inc(link);
    SvREADONLY_on(ff_link);
    targets[SVE_ROLE_CB - 1] = anchor;
    targets[SVE_ROLE_OPAQUE - 1] = link;
    targets[SVE_ROLE_FF - 1] = ff_link;
}

static MAGIC *
sve_anchor_magic(SV *sv)
{
    MAGIC *mg;

    if (SvTYPE(sv) < SVt_PVMG)
        return NULL;
    for (mg = SvMAGIC(sv); mg; mg = mg->mg_moremagic) {
        if (mg->mg_type == PERL_MAGIC_ext && mg->mg_virtual == &sve_vtbl)
            return mg;
    }
    return NULL;
}

/*
 * An argument's value, read once: a tied or otherwise magical argument
 * is fetched into a plain temporary copy, which is then both checked and
 * used (and named in the error), so a second read cannot return a value
 * that was never checked.
 */
PERL_STATIC_INLINE SV *
sve_arg_value(pTHX_ SV *sv)
{
    return SvGMAGICAL(sv) ? sv_mortalcopy(sv) : sv;
}

/*
 * The record behind a handle, after checking that the handle is one of
 * ours, of the expected role and kind.  Anything else croaks without
 * touching what the value points at.
 */
static sve_record *
sve_record_from_sv_slow(pTHX_ SV *sv, sve_role role, int kind,
                        const char *func, const char *arg)
{
    MAGIC *mg = NULL;
    sve_record *rec;
    int depth = 0;

    sv = sve_arg_value(aTHX_ sv);
    while (SvROK(sv) && depth < SVE_ROLE_FF) {
        sv = SvRV(sv);
        depth++;
        if ((mg = sve_anchor_magic(sv)) || !SvREADONLY(sv))
            break;
    }
    if (!mg)
        croak("%s: %s is not a %s handle created by Sys::Virt::Event",
              func, arg, sve_role_name[role]);
    rec = (sve_record *)mg->mg_ptr;
    if (!rec)
        croak("%s: %s belongs to another thread's event loop", func, arg);
    if (depth != (int)role)
        croak("%s: %s is a%s %s handle, not a %s handle%s", func, arg,
              depth == SVE_ROLE_OPAQUE ? "n" : "",
              sve_role_name[depth], sve_role_name[role],
              " (are the arguments in the wrong order?)");
    if (kind >= 0 && rec->kind != (sve_kind)kind)
        croak("%s: %s belongs to a %s, not a %s", func, arg,
              sve_kind_name[rec->kind], sve_kind_name[kind]);
    return rec;
}

/* The same, inline for the dispatch XSUBs: a handle as we made it is
 * recognised in a few loads (read-only links that cannot carry magic,
 * then the anchor with our magic first); anything else, including a
 * handle behind get magic, takes the full check above. */
PERL_STATIC_INLINE sve_record *
sve_record_from_sv(pTHX_ SV *sv, sve_role role, int kind,
                   const char *func, const char *arg)
{
    if (SvROK(sv) && !SvGMAGICAL(sv)) {
        SV *target = SvRV(sv);
        int depth = SVE_ROLE_CB;
        MAGIC *mg;

        while (depth < (int)role && SvROK(target) && SvREADONLY(target) &&
               SvTYPE(target) < SVt_PVMG) {
            target = SvRV(target);
            depth++;
        }
        if (depth == (int)role && SvTYPE(target) == SVt_PVMG &&
            (mg = SvMAGIC(target)) && mg->mg_virtual == &sve_vtbl &&
            mg->mg_type == PERL_MAGIC_ext && mg->mg_ptr &&
            (kind < 0 || ((sve_record *)mg->mg_ptr)->kind == (sve_kind)kind))
            return (sve_record *)mg->mg_ptr;
    }
    return sve_record_from_sv_slow(aTHX_ sv, role, kind, func, arg);
}

/* ------------------------------------------------------------------ */
/* 3. argument checks                                                  */
/* ------------------------------------------------------------------ */

/* An integer in [min, max]: a number with no fraction, or a string that
 * is one.  Refuses rather than truncates or wraps. */
static int
sve_int_nomg(pTHX_ SV *sv, IV min, IV max, const char *func, const char *arg)
{
    IV iv;
    UV uv;
    int flags;

    if (SvIOK(sv) && !SvIsUV(sv)) {
        iv = SvIVX(sv);
    } else if (SvPOK(sv) && !SvROK(sv)
               && (flags = grok_number(SvPVX(sv), SvCUR(sv), &uv)) != 0
               && (flags & ~IS_NUMBER_NEG) == IS_NUMBER_IN_UV
               && uv <= (UV)IV_MAX) {
        /* an integer in a string (a hash key, say): no float parsing */
        iv = (flags & IS_NUMBER_NEG) ? -(IV)uv : (IV)uv;
    } else if (SvOK(sv) && !SvROK(sv) && looks_like_number(sv)) {
        NV nv = SvNV_nomg(sv);

        /* range first: casting an out-of-range NV to IV is undefined */
        if (Perl_isnan(nv) || nv < (NV)min || nv > (NV)max || nv != (NV)(IV)nv)
            goto bad;
        iv = (IV)nv;
    } else {
        goto bad;
    }
    if (iv < min || iv > max)
        goto bad;
    return (int)iv;

 bad:
    croak("%s: %s must be an integer from %" IVdf " to %" IVdf ", not '%" SVf "'",
          func, arg, min, max, SVfARG(SvOK(sv) ? sv : sv_2mortal(newSVpvs("undef"))));
    return 0;                   /* not reached */
}

/* Inline, as the typemap's conversion: a plain integer in range is
 * taken without a call. */
PERL_STATIC_INLINE int
sve_int_from_sv(pTHX_ SV *sv, IV min, IV max, const char *func, const char *arg)
{
    if ((SvFLAGS(sv) & (SVf_IOK | SVf_IVisUV | SVs_GMG)) == SVf_IOK &&
        SvIVX(sv) >= min && SvIVX(sv) <= max)
        return (int)SvIVX(sv);
    return sve_int_nomg(aTHX_ sve_arg_value(aTHX_ sv), min, max, func, arg);
}

static int
sve_events_from_sv(pTHX_ SV *sv, const char *func, const char *arg)
{
    int events = sve_int_from_sv(aTHX_ sv, 0, INT_MAX, func, arg);

    if (events & ~SVE_EVENT_MASK)
        croak("%s: %s has unknown bits 0x%x (known: HANDLE_READABLE, "
              "HANDLE_WRITABLE, HANDLE_ERROR, HANDLE_HANGUP)",
              func, arg, events & ~SVE_EVENT_MASK);
    return events;
}

/*
 * Is FD open?  One that a Perl filehandle holds is: PerlIO counts the
 * descriptors its handles use, and reading that count spares a system
 * call, which cost a quarter of a public add and remove (more than the
 * call itself: it disturbs the caches of what runs around it).  Any other
 * descriptor is asked of the kernel.  A descriptor closed behind its Perl
 * filehandle's back (POSIX::close) still counts as open here, as it always
 * did when the filehandle itself is passed: what the watch then reports is
 * up to the loop.
 */
static bool
sve_fd_is_open(int fd)
{
    bool held_by_perl;

#ifdef USE_ITHREADS
    MUTEX_LOCK(&PL_perlio_mutex);
#endif
    held_by_perl = PL_perlio_fd_refcnt && fd < PL_perlio_fd_refcnt_size &&
        PL_perlio_fd_refcnt[fd] > 0;
#ifdef USE_ITHREADS
    MUTEX_UNLOCK(&PL_perlio_mutex);
#endif
    return held_by_perl || fcntl(fd, F_GETFD) >= 0;
}

/* A descriptor: an open fd number, or a Perl filehandle (its fileno),
 * which the watch then keeps open (see sve_public). */
typedef struct {
    int fd;
    SV *fh;                     /* its IO object, or NULL */
} sve_fd_arg;

static void
sve_fd_from_sv(pTHX_ SV *sv, sve_fd_arg *out, const char *func, const char *arg)
{
    sv = sve_arg_value(aTHX_ sv);
    if (isGV_with_GP(sv) || (SvROK(sv) && (isGV_with_GP(SvRV(sv)) ||
                                           SvTYPE(SvRV(sv)) == SVt_PVIO))) {
        /* not sv_2io(): its croak would not name the function */
        SV *target = SvROK(sv) ? SvRV(sv) : sv;
        IO *io = SvTYPE(target) == SVt_PVIO ? (IO *)target : GvIO((GV *)target);

        if (!io || !IoIFP(io))
            croak("%s: %s is not an open filehandle", func, arg);
        if ((out->fd = PerlIO_fileno(IoIFP(io))) < 0)
            croak("%s: %s has no file descriptor (an in-memory filehandle?)",
                  func, arg);
        /* the IO object, which holds the descriptor open: a glob may be a
         * copy in the caller's variable, assigned something else later */
        out->fh = (SV *)io;
        return;
    }
    out->fd = sve_int_nomg(aTHX_ sv, 0, INT_MAX, func, arg);
    out->fh = NULL;
    if (!sve_fd_is_open(out->fd))
        croak("%s: %s (%d) is not an open file descriptor", func, arg, out->fd);
}

static SV *sve_describe(pTHX_ SV *sv);

static SV *
sve_coderef_from_sv(pTHX_ SV *sv, const char *func, const char *arg)
{
    sv = sve_arg_value(aTHX_ sv);
    if (!SvROK(sv) || SvTYPE(SvRV(sv)) != SVt_PVCV) {
        const char *quote = SvOK(sv) && !SvROK(sv) ? "'" : "";

        croak("%s: %s is not a CODE reference, but %s%" SVf "%s", func, arg,
              quote, SVfARG(sve_describe(aTHX_ sv)), quote);
    }
    return sv;
}

typedef int SveInt;
typedef sve_fd_arg SveFd;
typedef int SveEvents;
typedef int SveFrequency;
typedef sve_record *SveHandleCallback;
typedef sve_record *SveTimeoutCallback;
typedef sve_record *SveOpaque;
typedef sve_record *SveFreeFunc;
typedef SV *SveCode;

/* ------------------------------------------------------------------ */
/* 4. calling into Perl, and reporting errors                          */
/* ------------------------------------------------------------------ */

/*
 * Whether $@ holds an exception, without calling the overloading of an
 * exception object: that could die too, outside any eval.
 */
#define SVE_ERRSV_SET() (SvROK(ERRSV) || SvTRUE_nomg(ERRSV))

/*
 * Text for a value from Perl that is safe to make below libvirt: a
 * reference is named by its class or type, never stringified (its
 * overloading could die); other values lose their trailing newlines.
 */
static SV *
sve_describe(pTHX_ SV *sv)
{
    STRLEN len;
    const char *pv;

    if (SvROK(sv)) {
        const char *type = sv_reftype(SvRV(sv), TRUE);

        return sv_2mortal(newSVpvf("%s %s %s", strchr("AEIOUaeiou", *type) ? "an" : "a",
                                   type, SvOBJECT(SvRV(sv)) ? "object" : "reference"));
    }
    if (!SvOK(sv))
        return sv_2mortal(newSVpvs("undef"));
    pv = SvPV_nomg(sv, len);
    while (len && pv[len - 1] == '\n')
        len--;
    return sv_2mortal(newSVpvn_flags(pv, len, SvUTF8(sv)));
}

/*
 * Every call from C into Perl goes through here: CODE (or the method
 * METHOD of INVOCANT) with ARGS, under G_EVAL, on a stack of its own as
 * perl does for DESTROY and tie methods, so that loop control in the
 * called code (last, next) cannot reach a loop of the program's beyond
 * libvirt's frames: it dies with "Label not found", which G_EVAL catches.
 * $@ is left as it was before the call.
 *
 * Returns FALSE when the code died, with a mortal copy of the exception
 * in *err.  In scalar context, *ret is the result: a temporary of the
 * caller's SAVETMPS scope.  In void context the called code's temporaries
 * are freed before returning.  That is done here rather than with
 * G_DISCARD, whose scope costs a save stack round trip: nothing can
 * unwind past this frame (G_EVAL), so the tmps floor is restored by hand.
 */
static bool
sve_call(pTHX_ SV *code, const char *method, SV *invocant, SV **args, int nargs,
         I32 context, SV **ret, SV **err)
{
    dSP;
    SV *saved = SVE_ERRSV_SET() ? sv_2mortal(newSVsv(ERRSV)) : NULL;
    const SSize_t tmps_floor = PL_tmps_floor;
    bool died;
    int i;

    if (context == G_VOID)
        PL_tmps_floor = PL_tmps_ix;
    PUSHSTACKi(PERLSI_MAGIC);
    PUSHMARK(SP);
    EXTEND(SP, nargs + 1);
    if (invocant)
        PUSHs(invocant);
    for (i = 0; i < nargs; i++)
        PUSHs(args[i]);
    PUTBACK;
    if (code)
        call_sv(code, context | G_EVAL);
    else
        call_method(method, context | G_EVAL);
    SPAGAIN;
    if (context == G_SCALAR)
        *ret = POPs;
    PUTBACK;
    POPSTACK;
    if (context == G_VOID) {
        FREETMPS;
        PL_tmps_floor = tmps_floor;
    }
    died = SVE_ERRSV_SET();
    if (died)
        *err = sv_2mortal(newSVsv(ERRSV));
    if (saved)
        sv_setsv(ERRSV, saved);
    else if (died)
        sv_setpvs(ERRSV, "");
    return !died;
}

/*
 * The arguments of calls into Perl (integers, and the references that are
 * handles) are made from a few spare SVs, used again from call to call:
 * allocating and freeing them was a fifth of a dispatch.  Each argument
 * position has a slot.  An SV is taken out of its slot for the call (a
 * nested call finds the slot empty and allocates), and goes back only if
 * the call left it exactly as it was made, an integer or a reference that
 * nothing else holds; otherwise it is released as a fresh one would be.
 */
#define SVE_ARG_IV_FLAGS (SVt_IV | SVf_IOK | SVp_IOK)
#define SVE_ARG_RV_FLAGS (SVt_IV | SVf_ROK)

PERL_STATIC_INLINE SV *
sve_arg_take(pTHX_ my_cxt_t *cxt, int slot)
{
    SV *sv = cxt->spare_args[slot];

    if (sv) {
        cxt->spare_args[slot] = NULL;
        /* still as it was put back?  Perl code can reach a spare through
         * the uncounted pointers of @DB::args, and write to it */
        if (SvREFCNT(sv) == 1 && SvFLAGS(sv) == SVt_IV)
            return sv;
        SvREFCNT_dec_NN(sv);
    }
    return newSV_type(SVt_IV);
}

PERL_STATIC_INLINE SV *
sve_arg_iv(pTHX_ my_cxt_t *cxt, int slot, IV value)
{
    SV *sv = sve_arg_take(aTHX_ cxt, slot);

    SvIV_set(sv, value);
    SvFLAGS(sv) = SVE_ARG_IV_FLAGS;
    return sv;
}

/* A reference to TARGET, taking over one reference count the caller owns. */
PERL_STATIC_INLINE SV *
sve_arg_rv_noinc(pTHX_ my_cxt_t *cxt, int slot, SV *target)
{
    SV *sv = sve_arg_take(aTHX_ cxt, slot);

    SvRV_set(sv, target);
    SvFLAGS(sv) = SVE_ARG_RV_FLAGS;
    return sv;
}

PERL_STATIC_INLINE void
sve_arg_done(pTHX_ my_cxt_t *cxt, int slot, SV *sv)
{
    SV *target = NULL;

    if (cxt->spare_args[slot] || cxt->destructing || SvREFCNT(sv) != 1 ||
        (SvFLAGS(sv) != SVE_ARG_IV_FLAGS && SvFLAGS(sv) != SVE_ARG_RV_FLAGS)) {
        SvREFCNT_dec_NN(sv);
        return;
    }
    if (SvROK(sv)) {
        target = SvRV(sv);
        SvRV_set(sv, NULL);
    }
    SvFLAGS(sv) = SVt_IV;
    cxt->spare_args[slot] = sv;
    SvREFCNT_dec(target);       /* last: it may free a handle's record */
}

PERL_STATIC_INLINE void
sve_args_done(pTHX_ my_cxt_t *cxt, SV **args, int nargs)
{
    int i;

    for (i = 0; i < nargs; i++)
        sve_arg_done(aTHX_ cxt, i, args[i]);
}

/*
 * Hands an error to Sys::Virt::Event::_report_error (the $DIED hook, or a
 * warning).  This may run below a libvirt C frame, so the report runs
 * under G_EVAL too; if it dies ($SIG{__WARN__} dying, a broken hook), the
 * message goes straight to stderr.
 */
static void
sve_report(pTHX_ SV *err, SV *where, bool died)
{
    dMY_CXT;
    CV *report = get_cv("Sys::Virt::Event::_report_error", 0);
    SV *args[3];
    SV *report_err = NULL;

    if (MY_CXT.exit_held)
        return;                 /* the program is exiting: not an error */
    ENTER;
    SAVETMPS;
    args[0] = err;
    args[1] = where;
    args[2] = died ? &PL_sv_yes : &PL_sv_no;
    if ((!report || !sve_call(aTHX_ (SV *)report, NULL, NULL, args, 3,
                              G_VOID, NULL, &report_err)) &&
        !MY_CXT.exit_held)      /* the hook called exit(): not a failure */
        PerlIO_printf(PerlIO_stderr(),
                      "Sys::Virt::Event: %" SVf "%s: %" SVf
                      " (and reporting it failed: %" SVf ")\n",
                      SVfARG(where), died ? " died" : "",
                      SVfARG(sve_describe(aTHX_ err)),
                      SVfARG(report_err ? sve_describe(aTHX_ report_err)
                             : sv_2mortal(newSVpvs("no reporter"))));
    FREETMPS;
    LEAVE;
}

/* ------------------------------------------------------------------ */
/* 5. what waits until libvirt has returned: signals, exit, frees      */
/* ------------------------------------------------------------------ */

/*
 * MY_CXT.libvirt_frames counts the libvirt frames below us: a trampoline,
 * a dispatch, a public call, run_default, a Sys::Virt callback we
 * protect.  While it is not 0, three things wait:
 *
 * - Perl's signal handlers.  perl runs a pending handler at the next
 *   statement of whatever Perl code runs, and below libvirt that is a
 *   loop method or a callback: the handler's die would be caught there
 *   and reported as theirs (a Ctrl-C lost), or unwind libvirt's frames.
 *   sve_signal_hook, perl's PL_signalhook, leaves them pending (perl asks
 *   again at each statement, a test of one counter) until the count is
 *   back at 0; they then run as after any other long C call.  They wait
 *   in a destructor too: libvirt frees a callback's data from inside its
 *   own calls, and that runs the destructors of what the callback held.
 * - exit().  It unwinds every Perl frame at once, G_EVAL or not, and
 *   below libvirt that leaves libvirt's locks held for good.  The exit
 *   ops compiled once this module is loaded call sve_pp_exit, which notes
 *   the status and dies instead; the same hook carries the exit out.
 * - libvirt's free functions: the queue further down.
 */
static void
sve_carry_out_exit(pTHX_ my_cxt_t *cxt)
{
    if (cxt->exit_held) {
        cxt->exit_held = FALSE;
        PL_exit_flags |= PERL_EXIT_EXPECTED;
        my_exit(cxt->exit_status);
    }
}

static void
sve_signal_hook(pTHX)
{
    dMY_CXT;

    if (MY_CXT.libvirt_frames > 0 || PL_curstackinfo->si_type == PERLSI_DESTROY)
        return;                 /* PL_sig_pending stays set */
    sve_carry_out_exit(aTHX_ &MY_CXT);
    MY_CXT.next_signalhook(aTHX);
}

static Perl_check_t sve_next_ck_exit;

static OP *
sve_pp_exit(pTHX)
{
    dSP;
    IV status = 0;
#ifdef MULTIPLICITY
    /* the op may have been compiled by an interpreter that never loaded
     * this module (PL_check is process-wide) */
    if (my_cxt_index < 0 || my_cxt_index >= PL_my_cxt_size ||
        !PL_my_cxt_list[my_cxt_index])
        return PL_ppaddr[OP_EXIT](aTHX);
#endif
    {
        dMY_CXT;

        if (MY_CXT.libvirt_frames == 0)
            return PL_ppaddr[OP_EXIT](aTHX);
        if (MAXARG >= 1) {
            SV *sv = POPs;

            if (sv)
                status = SvIV(sv);
        }
        PUTBACK;
        MY_CXT.exit_held = TRUE;
        MY_CXT.exit_status = (int)status;
        PL_sig_pending = 1;     /* the hook carries it out */
    }
    croak("exit(%d) below a libvirt call: it takes effect once libvirt "
          "has returned\n", (int)status);
    return NORMAL;              /* not reached */
}

static OP *
sve_ck_exit(pTHX_ OP *o)
{
    o = sve_next_ck_exit(aTHX_ o);
    if (o->op_type == OP_EXIT && o->op_ppaddr == PL_ppaddr[OP_EXIT])
        o->op_ppaddr = sve_pp_exit;
    return o;
}

/*
 * libvirt forbids running a free function inside its remove call (on a
 * remote connection it deadlocks on the socket lock), and an
 * implementation may well free from inside remove_handle.  So frees are
 * queued and run only when no libvirt frame is below us: at the next
 * dispatch from the loop or public call made from the top level.
 */
/* REMOVED -> FREE_QUEUED */
static void
sve_queue_free(pTHX_ sve_record *rec)
{
    dMY_CXT;

    rec->state = SVE_FREE_QUEUED;
    rec->next_pending = NULL;
    if (MY_CXT.pending_tail)
        MY_CXT.pending_tail->next_pending = rec;
    else
        MY_CXT.pending_head = rec;
    MY_CXT.pending_tail = rec;
}

static void
sve_run_pending(pTHX)
{
    dMY_CXT;

    while (MY_CXT.libvirt_frames == 0 && MY_CXT.pending_head) {
        sve_record *rec = MY_CXT.pending_head;
        virFreeCallback ff = rec->ff;
        void *opaque = rec->opaque;

        MY_CXT.pending_head = rec->next_pending;
        if (!MY_CXT.pending_head)
            MY_CXT.pending_tail = NULL;
        rec->state = SVE_SETTLED;     /* FREE_QUEUED -> SETTLED */
        rec->ff = NULL;
        rec->opaque = NULL;
        sve_record_release(rec);
        if (ff) {
            /* A free function may call back into libvirt, which may call
             * our trampolines: what they queue waits for this loop. */
            MY_CXT.libvirt_frames++;
            ff(opaque);
            MY_CXT.libvirt_frames--;
        }
    }
    if (!MY_CXT.pending_head && MY_CXT.drain_timer < 0)
        MY_CXT.drain_timer = 0;     /* the loop may be asked again */
}

/*
 * Interpreter teardown, registered with call_atexit: perl runs it in
 * global destruction, after the objects' DESTROY methods (which find the
 * trampolines refusing to call the implementation, see sve_impl_usable)
 * and before the remaining SVs are freed.  What is still registered stays
 * with libvirt; our bookkeeping is released, and from here on the
 * trampolines find nothing and the public calls do nothing.  Free
 * functions do not run: libvirt may still hold what they would free.
 */
static void sve_public_release(pTHX_ void *opaque);
static void sve_public_free(void *opaque);

/* The registering interpreter goes away: nothing calls into it again. */
static void
sve_owner_gone(pTHX)
{
#ifdef MULTIPLICITY
    if (sve_owner != aTHX)
        return;
    sve_owner = NULL;   /* a later interpreter may be allocated at the same address */
#endif
#ifdef SVE_HAVE_EV
    /* what the native loop holds stays with libvirt, as with its
     * default loop */
    if (sve_registered == SVE_LOOP_EV)
        sve_ev_retire();
#endif
}

static void
sve_destruct(pTHX_ void *unused)
{
    dMY_CXT;
    sve_record *rec;
    int kind;
    size_t i;

    PERL_UNUSED_ARG(unused);
    MY_CXT.destructing = TRUE;
    if (PL_signalhook == sve_signal_hook)
        PL_signalhook = MY_CXT.next_signalhook;
    SvREFCNT_dec(MY_CXT.impl);
    MY_CXT.impl = NULL;
    SvREFCNT_dec(MY_CXT.failure);
    MY_CXT.failure = NULL;
    for (i = 0; i < SVE_N_SPARE_ARGS; i++) {
        SvREFCNT_dec(MY_CXT.spare_args[i]);
        MY_CXT.spare_args[i] = NULL;
    }
    sve_owner_gone(aTHX);
    for (i = 0; i < SVE_N_METHODS; i++) {
        SvREFCNT_dec(MY_CXT.methods[i].cv);
        SvREFCNT_dec(MY_CXT.methods[i].stash);
        MY_CXT.methods[i].cv = NULL;
        MY_CXT.methods[i].stash = NULL;
    }
    while ((rec = MY_CXT.updates)) {
        MY_CXT.updates = rec->next_update;
        rec->update_queued = FALSE;
        sve_record_unhold(aTHX_ rec);
    }
    while ((rec = MY_CXT.pending_head)) {
        MY_CXT.pending_head = rec->next_pending;
        /* our own free function only drops a coderef: safe to run */
        if (rec->ff == sve_public_free && rec->opaque)
            sve_public_release(aTHX_ rec->opaque);
        sve_record_settle(rec);
    }
    MY_CXT.pending_tail = NULL;
    for (kind = SVE_KIND_HANDLE; kind <= SVE_KIND_TIMEOUT; kind++) {
        sve_idmap *map = &MY_CXT.records[kind];

        for (i = 0; i < map->cap; i++) {
            if (map->keys[i] > 0) {
                /* a late dispatch is a no-op */
                sve_record_settle((sve_record *)map->vals[i]);
            }
        }
        sve_idmap_clear(map);
        /* With a Perl loop, the records just released were the only
         * holders of the public watches' data; with libvirt's default
         * loop, libvirt still holds it. */
        map = &MY_CXT.publics[kind];
        if (sve_registered == SVE_LOOP_PERL) {
            for (i = 0; i < map->cap; i++) {
                if (map->keys[i] > 0)
                    sve_public_release(aTHX_ map->vals[i]);
            }
        }
        sve_idmap_clear(map);
    }
}

/* ------------------------------------------------------------------ */
/* 6. trampolines: libvirt -> Perl implementation                      */
/* ------------------------------------------------------------------ */

/* Said once per process: libvirt called from a thread that is not the
 * registering interpreter's.  Not through warn(), whose handler could
 * die and unwind libvirt's frames. */
void
sve_refuse_foreign(const char *what)
{
    if (sve_warned_foreign++)
        return;
    fprintf(stderr, "Sys::Virt::Event: libvirt called %s from a thread other "
            "than the one that registered the event loop; refused "
            "(this is said once)\n", what);
    fflush(stderr);
}

#ifdef MULTIPLICITY
/* The interpreter a trampoline may call into: the registering one, and
 * only when libvirt calls from that interpreter's thread. */
# define SVE_TRAMPOLINE_ENTER(what, fail)                       \
    PerlInterpreter *my_perl = PERL_GET_THX;                    \
    if (!my_perl || my_perl != sve_owner) {                     \
        sve_refuse_foreign(what);                               \
        fail;                                                   \
    }
#else
# define SVE_TRAMPOLINE_ENTER(what, fail)
#endif

static SV *
sve_where(pTHX_ const char *method)
{
    dMY_CXT;
    SV *impl = MY_CXT.impl;
    const char *cls = (impl && SvROK(impl) && SvOBJECT(SvRV(impl)))
        ? HvNAME(SvSTASH(SvRV(impl))) : "the event loop";

    return sv_2mortal(newSVpvf("%s method of %s", method, cls));
}

/* Record why a trampoline failed, for the public call that croaks on it. */
static void
sve_set_failure(pTHX_ SV *why)
{
    dMY_CXT;

    if (MY_CXT.failure)         /* NULL once the interpreter is torn down */
        sv_setsv(MY_CXT.failure, why);
}

void
sve_note_failure(pTHX_ const char *why)
{
    dMY_CXT;

    if (MY_CXT.failure)
        sv_setpv(MY_CXT.failure, why);
}

/*
 * The implementation's method, looked up by name again only when the
 * object's class, a method of that class (pkg_gen), of a parent class
 * (cache_gen) or of UNIVERSAL (PL_sub_generation) changed since: these
 * counters only grow, so their sum changes with any of them.  NULL when
 * it has none (or only an AUTOLOAD): call_method then does the full dance.
 */
static CV *
sve_impl_method(pTHX_ my_cxt_t *cxt, sve_method m)
{
    HV *stash = SvSTASH(SvRV(cxt->impl));
    struct mro_meta *meta = HvMROMETA(stash);
    U32 gen = PL_sub_generation + meta->cache_gen + meta->pkg_gen;
    sve_method_cache *cache = &cxt->methods[m];
    GV *gv;

    if (cache->cv && cache->stash == stash && cache->gen == gen)
        return cache->cv;
    SvREFCNT_dec(cache->cv);
    SvREFCNT_dec(cache->stash);
    cache->cv = NULL;
    cache->stash = NULL;
    gv = gv_fetchmethod_pvn_flags(stash, sve_method_name[m],
                                  strlen(sve_method_name[m]), 0);
    if (!gv || !isGV(gv) || !GvCV(gv))
        return NULL;
    cache->cv = (CV *)SvREFCNT_inc_simple_NN((SV *)GvCV(gv));
    cache->stash = (HV *)SvREFCNT_inc_simple_NN((SV *)stash);
    cache->gen = gen;
    return cache->cv;
}

/*
 * $impl->METHOD(args) in scalar context, from inside libvirt.  Returns
 * the result (a temporary of the caller's SAVETMPS scope), or NULL when
 * the method died: that has been reported and noted as the failure.
 */
static SV *
sve_call_impl(pTHX_ sve_method m, SV **args, int nargs)
{
    dMY_CXT;
    CV *cv = sve_impl_method(aTHX_ &MY_CXT, m);
    SV *ret = NULL;
    SV *err;

    if (!sve_call(aTHX_ (SV *)cv, sve_method_name[m], MY_CXT.impl, args, nargs,
                  G_SCALAR, &ret, &err)) {
        SV *where = sve_where(aTHX_ sve_method_name[m]);

        sve_set_failure(aTHX_ sv_2mortal(newSVpvf("%" SVf " died: %" SVf, SVfARG(where),
                                                  SVfARG(sve_describe(aTHX_ err)))));
        sve_report(aTHX_ err, where, TRUE);
        return NULL;
    }
    return ret;
}

/* During global destruction the implementation object may be half gone:
 * trampolines then do their bookkeeping without calling it. */
static bool
sve_impl_usable(pTHX)
{
    dMY_CXT;

    return !MY_CXT.destructing && PL_phase != PERL_PHASE_DESTRUCT &&
        MY_CXT.impl && SvROK(MY_CXT.impl);
}

static int
sve_add(pTHX_ sve_kind kind, int fd, int events_or_ms, void *cb,
        void *opaque, virFreeCallback ff)
{
    dMY_CXT;
    sve_method method = kind == SVE_KIND_HANDLE ? SVE_ADD_HANDLE : SVE_ADD_TIMEOUT;
    sve_record *rec;
    SV *args[SVE_N_SPARE_ARGS];
    SV *targets[3];
    int nargs = 0, i;
    SV *ret;
    int id = -1;

    if (!sve_impl_usable(aTHX)) {
        sve_set_failure(aTHX_ sv_2mortal(newSVpvs("the interpreter is being destroyed")));
        return -1;
    }

    Newxz(rec, 1, sve_record);
    rec->kind = kind;
    rec->fd = kind == SVE_KIND_HANDLE ? fd : -1;
    if (kind == SVE_KIND_HANDLE)
        rec->cb.handle = (virEventHandleCallback)cb;
    else
        rec->cb.timeout = (virEventTimeoutCallback)cb;
    rec->opaque = opaque;
    rec->ff = ff;
    rec->fork_generation = sve_fork_generation;

    ENTER;
    SAVETMPS;
    if (kind == SVE_KIND_HANDLE) {
        args[nargs] = sve_arg_iv(aTHX_ &MY_CXT, nargs, fd);
        nargs++;
    }
    args[nargs] = sve_arg_iv(aTHX_ &MY_CXT, nargs, events_or_ms);
    nargs++;
    sve_handle_targets(aTHX_ rec, targets);
    for (i = 0; i < 3; i++, nargs++)
        args[nargs] = sve_arg_rv_noinc(aTHX_ &MY_CXT, nargs, targets[i]);

    ret = sve_call_impl(aTHX_ method, args, nargs);
    if (ret) {
        IV iv = 0;

        if (SvIOK(ret) && !SvIsUV(ret)) {
            iv = SvIVX(ret);    /* the usual answer: a plain integer */
            if (iv > INT_MAX)
                iv = 0;
        } else if (SvOK(ret) && !SvROK(ret) && looks_like_number(ret)) {
            NV nv = SvNV(ret);

            if (nv >= 1 && nv <= INT_MAX && nv == (NV)(IV)nv)
                iv = (IV)nv;
        }
        if (iv <= 0) {
            SV *why = sv_2mortal(newSVpvf("returned '%" SVf "', not a positive %s id",
                                          SVfARG(sve_describe(aTHX_ ret)),
                                          sve_kind_name[kind]));
            SV *where = sve_where(aTHX_ sve_method_name[method]);

            sve_set_failure(aTHX_ sv_2mortal(newSVpvf("%" SVf " %" SVf,
                                                      SVfARG(where), SVfARG(why))));
            sve_report(aTHX_ why, where, FALSE);
        } else if (sve_idmap_get(&MY_CXT.records[kind], (int)iv)) {
            SV *why = sv_2mortal(newSVpvf("returned %s %d, which is already in use",
                                          sve_kind_name[kind], (int)iv));
            SV *where = sve_where(aTHX_ sve_method_name[method]);

            sve_set_failure(aTHX_ sv_2mortal(newSVpvf("%" SVf " %" SVf,
                                                      SVfARG(where), SVfARG(why))));
            sve_report(aTHX_ why, where, FALSE);
        } else {
            id = (int)iv;
        }
    }

    if (id > 0)
        sve_record_added(aTHX_ rec, id, events_or_ms);
    else
        sve_record_add_failed(rec);
    /* keep the record while the arguments that point at it go away */
    rec->holders++;
    sve_args_done(aTHX_ &MY_CXT, args, nargs);
    FREETMPS;
    LEAVE;
    sve_record_unhold(aTHX_ rec);
    return id;
}

/*
 * Tells the loop a new mask or interval, unless that changes nothing: the
 * same mask, or the same interval of 0 or -1 (a positive interval is
 * passed on again: libvirt restarts a timer that way, for keepalive).
 * The loop has heard of it only once its method returned: after a
 * failure, the same value is passed on again next time.
 */
static void
sve_tell_loop(pTHX_ sve_record *rec, int value)
{
    dMY_CXT;
    SV *args[2];

    if (value == rec->loop_value && (rec->kind == SVE_KIND_HANDLE || value <= 0))
        return;
    if (!sve_impl_usable(aTHX)) {
        rec->loop_value = value;
        return;
    }
    ENTER;
    SAVETMPS;
    args[0] = sve_arg_iv(aTHX_ &MY_CXT, 0, rec->id);
    args[1] = sve_arg_iv(aTHX_ &MY_CXT, 1, value);
    if (sve_call_impl(aTHX_ rec->kind == SVE_KIND_HANDLE ? SVE_UPDATE_HANDLE : SVE_UPDATE_TIMEOUT,
                      args, 2))
        rec->loop_value = value;
    sve_args_done(aTHX_ &MY_CXT, args, 2);
    FREETMPS;
    LEAVE;
}

/*
 * While the loop is dispatching, it is not looking at its watches: the
 * updates libvirt makes meanwhile are noted and passed on once, when the
 * dispatch returns (or before a nested one starts).  libvirt flips its
 * event timer to -1 and back to 0 inside each delivery, and an RPC made
 * from a callback sets a socket's mask to 0 and back: the loop then
 * hears nothing at all.
 */
static void sve_flush_updates(pTHX);

static void
sve_update(pTHX_ sve_kind kind, int id, int events_or_ms)
{
    dMY_CXT;
    sve_record *rec = (sve_record *)sve_idmap_get(&MY_CXT.records[kind], id);

    /* libvirt updates ids it never added (-1 after keepalive stops):
     * unknown ids are ignored, as libvirt's own loops do */
    if (!rec)
        return;
    rec->wanted_value = events_or_ms;
    if (!MY_CXT.dispatching) {
        bool listed = rec->update_queued;

        /* a dispatch that died below libvirt left its updates behind:
         * they go first, this one with its new value */
        if (MY_CXT.updates)
            sve_flush_updates(aTHX);
        if (!listed)
            sve_tell_loop(aTHX_ rec, events_or_ms);
        return;
    }
    if (!rec->update_queued) {
        rec->update_queued = TRUE;
        rec->holders++;         /* held while listed */
        rec->next_update = MY_CXT.updates;
        MY_CXT.updates = rec;
    }
}

/* Passes on the updates noted during a dispatch (see sve_update). */
static void
sve_flush_updates(pTHX)
{
    dMY_CXT;
    sve_record *rec;

    while ((rec = MY_CXT.updates)) {
        MY_CXT.updates = rec->next_update;
        rec->update_queued = FALSE;
        if (rec->state == SVE_LIVE) {
            MY_CXT.libvirt_frames++;
            MY_CXT.trampolines++;
            sve_tell_loop(aTHX_ rec, rec->wanted_value);
            MY_CXT.trampolines--;
            MY_CXT.libvirt_frames--;
        }
        sve_record_unhold(aTHX_ rec);
    }
}

static int
sve_remove(pTHX_ sve_kind kind, int id)
{
    dMY_CXT;
    sve_record *rec = (sve_record *)sve_idmap_delete(&MY_CXT.records[kind], id);
    int result = 0;

    if (!rec) {
        sve_set_failure(aTHX_ sv_2mortal(newSVpvf("%s %d is not registered",
                                                  sve_kind_name[kind], id)));
        return -1;
    }
    /* From now on a dispatch of this record is a no-op, whatever the
     * implementation answers: libvirt considers it gone. */
    sve_record_removed(rec);
    rec->holders++;             /* hold it across the call */

    if (sve_impl_usable(aTHX)) {
        SV *args[1];
        SV *ret;

        sve_method method = kind == SVE_KIND_HANDLE ? SVE_REMOVE_HANDLE : SVE_REMOVE_TIMEOUT;

        ENTER;
        SAVETMPS;
        args[0] = sve_arg_iv(aTHX_ &MY_CXT, 0, id);
        ret = sve_call_impl(aTHX_ method, args, 1);
        if (!ret) {
            result = -1;
        } else if (SvOK(ret) && !SvROK(ret) && looks_like_number(ret) && SvNV(ret) < 0) {
            sve_set_failure(aTHX_ sv_2mortal(newSVpvf("%" SVf " returned %" SVf,
                                                      SVfARG(sve_where(aTHX_ sve_method_name[method])),
                                                      SVfARG(ret))));
            result = -1;
        }
        sve_args_done(aTHX_ &MY_CXT, args, 1);     /* ret may be one of them */
        FREETMPS;
        LEAVE;
    }

    sve_record_unhold(aTHX_ rec);
    return result;
}

/*
 * A loop written for Sys::Virt 9.0.0 knows nothing of the free queue:
 * frees queued inside a libvirt call made from the program's top level
 * (a connection closed, say) would wait for a dispatch that may never
 * come, keeping a descriptor open each.  So, as that call's last
 * trampoline returns, the loop is asked for a 0 ms timer the way libvirt
 * asks it; its dispatch runs the queue, and the timer removes itself.
 * MY_CXT.drain_timer is its id, or -1 when the loop refused one: the
 * queue then waits for the next dispatch.
 */
static void
sve_drain_cb(int timer, void *opaque)
{
    dTHX;
    dMY_CXT;

    PERL_UNUSED_ARG(opaque);
    if (MY_CXT.drain_timer == timer)
        MY_CXT.drain_timer = 0;
    virEventRemoveTimeout(timer);
}

static void
sve_ask_for_drain(pTHX)
{
    dMY_CXT;
    int id;

    if (sve_registered != SVE_LOOP_PERL || !sve_impl_usable(aTHX))
        return;
    MY_CXT.drain_timer = -1;    /* not again while this add runs */
    id = sve_add(aTHX_ SVE_KIND_TIMEOUT, -1, 0, (void *)sve_drain_cb, NULL, NULL);
    if (id > 0)
        MY_CXT.drain_timer = id;
}

/*
 * The whole of a trampoline counts as inside libvirt (a frame), including
 * error reports and the freeing of temporaries: a public call made from
 * there must not run frees, and the loop must not dispatch from there.
 */
#define SVE_INSIDE_LIBVIRT(stmt) STMT_START {                   \
        dMY_CXT;                                                \
        MY_CXT.libvirt_frames++;                               \
        MY_CXT.trampolines++;                                   \
        stmt;                                                   \
        if (MY_CXT.libvirt_frames == 1 && MY_CXT.pending_head &&         \
            !MY_CXT.drain_timer)                                \
            sve_ask_for_drain(aTHX);                            \
        MY_CXT.trampolines--;                                   \
        MY_CXT.libvirt_frames--;                               \
    } STMT_END

static int
sve_tramp_add_handle(int fd, int events, virEventHandleCallback cb,
                     void *opaque, virFreeCallback ff)
{
    int id;
    SVE_TRAMPOLINE_ENTER("add_handle", return -1);

    SVE_INSIDE_LIBVIRT(id = sve_add(aTHX_ SVE_KIND_HANDLE, fd, events, (void *)cb,
                                    opaque, ff));
    return id;
}

static void
sve_tramp_update_handle(int watch, int events)
{
    SVE_TRAMPOLINE_ENTER("update_handle", return);

    SVE_INSIDE_LIBVIRT(sve_update(aTHX_ SVE_KIND_HANDLE, watch, events));
}

static int
sve_tramp_remove_handle(int watch)
{
    int rc;
    SVE_TRAMPOLINE_ENTER("remove_handle", return -1);

    SVE_INSIDE_LIBVIRT(rc = sve_remove(aTHX_ SVE_KIND_HANDLE, watch));
    return rc;
}

static int
sve_tramp_add_timeout(int ms, virEventTimeoutCallback cb,
                      void *opaque, virFreeCallback ff)
{
    int id;
    SVE_TRAMPOLINE_ENTER("add_timeout", return -1);

    SVE_INSIDE_LIBVIRT(id = sve_add(aTHX_ SVE_KIND_TIMEOUT, -1, ms, (void *)cb,
                                    opaque, ff));
    return id;
}

static void
sve_tramp_update_timeout(int timer, int ms)
{
    SVE_TRAMPOLINE_ENTER("update_timeout", return);

    SVE_INSIDE_LIBVIRT(sve_update(aTHX_ SVE_KIND_TIMEOUT, timer, ms));
}

static int
sve_tramp_remove_timeout(int timer)
{
    int rc;
    SVE_TRAMPOLINE_ENTER("remove_timeout", return -1);

    SVE_INSIDE_LIBVIRT(rc = sve_remove(aTHX_ SVE_KIND_TIMEOUT, timer));
    return rc;
}

/* ------------------------------------------------------------------ */
/* 7. public watches and timers                                        */
/* ------------------------------------------------------------------ */

/*
 * add_handle/add_timeout made from Perl go through libvirt into whichever
 * loop is registered; libvirt then calls these C callbacks, which call the
 * user's (copied) coderef.  The free function releases it.
 */
struct sve_public {
    sve_kind kind;
    int id;
    SV *code;
    SV *fh;                     /* the filehandle watched, kept open */
    int fork_generation;        /* see sve_fork_generation */
#ifdef MULTIPLICITY
    PerlInterpreter *perl;
#endif
};

#ifdef MULTIPLICITY
# define SVE_PUBLIC_ENTER(pub, what, fail)                       \
    PerlInterpreter *my_perl = PERL_GET_THX;                     \
    if (!my_perl || my_perl != (pub)->perl) {                    \
        sve_refuse_foreign(what);                                \
        fail;                                                    \
    }
#else
# define SVE_PUBLIC_ENTER(pub, what, fail)
#endif

/*
 * Calls the coderef with up to three integers (see sve_arg_take), in void
 * context.  The coderef is held for the call: a nested loop iteration
 * inside the callback may run this watch's free function.
 */
void
sve_public_call(pTHX_ sve_public *pub, int nargs, int a0, int a1, int a2)
{
    dMY_CXT;
    const int vals[3] = { a0, a1, a2 };
    const sve_kind kind = pub->kind;
    const int id = pub->id;
    SV *code;
    SV *args[3];
    SV *err;
    bool ok;
    int i;

    /* the parent's, in a forked child; or the program is exiting */
    if (pub->fork_generation != sve_fork_generation || MY_CXT.exit_held)
        return;
    code = SvREFCNT_inc_simple_NN(pub->code);
    for (i = 0; i < nargs; i++)
        args[i] = sve_arg_iv(aTHX_ &MY_CXT, i, vals[i]);
    ok = sve_call(aTHX_ code, NULL, NULL, args, nargs, G_VOID, NULL, &err);
    sve_args_done(aTHX_ &MY_CXT, args, nargs);
    SvREFCNT_dec(code);
    if (!ok) {
        ENTER;
        SAVETMPS;
        sve_report(aTHX_ err, sv_2mortal(newSVpvf("callback of %s %d",
                                                  sve_kind_name[kind], id)), TRUE);
        FREETMPS;
        LEAVE;
    }
}

void
sve_public_handle_cb(int watch, int fd, int events, void *opaque)
{
    sve_public *pub = (sve_public *)opaque;
    SVE_PUBLIC_ENTER(pub, "a watch callback", return);

    sve_public_call(aTHX_ pub, 3, watch, fd, events);
}

void
sve_public_timeout_cb(int timer, void *opaque)
{
    sve_public *pub = (sve_public *)opaque;
    SVE_PUBLIC_ENTER(pub, "a timer callback", return);

    sve_public_call(aTHX_ pub, 1, timer, 0, 0);
}

static void
sve_public_release(pTHX_ void *opaque)
{
    sve_public *pub = (sve_public *)opaque;

    SvREFCNT_dec(pub->code);
    SvREFCNT_dec(pub->fh);
    Safefree(pub);
}

static void
sve_public_free(void *opaque)
{
    sve_public *pub = (sve_public *)opaque;
    /* from a foreign thread the coderef cannot be touched: it leaks */
    SVE_PUBLIC_ENTER(pub, "a free function", return);

    sve_public_release(aTHX_ pub);
}

/* ------------------------------------------------------------------ */
/* 8. Sys::Virt's own callbacks, protected                             */
/* ------------------------------------------------------------------ */

/*
 * Sys::Virt calls the callbacks registered through it (domain and other
 * events, the close callback, stream callbacks) from libvirt's dispatch,
 * without G_EVAL: a die there unwinds libvirt's frames, and the rest of
 * libvirt's batch is lost.  Sys::Virt::Event hands Sys::Virt, instead of
 * the program's coderef, an anonymous XSUB that calls it the way our own
 * callbacks are called: under G_EVAL, reported like them, with a libvirt
 * frame counted (signals and exit wait).  The XSUB runs no Perl statement
 * of its own, so nothing can run before the frame is counted.  Its
 * coderef and what to call it in reports ride on it as ext magic, an
 * array [code, where] that perl frees with it and copies for a thread.
 */
static MGVTBL sve_protected_vtbl;

static XSPROTO(sve_protected_callback)
{
    dXSARGS;
    dMY_CXT;
    MAGIC *mg = mg_findext((SV *)cv, PERL_MAGIC_ext, &sve_protected_vtbl);
    SV **slots = AvARRAY((AV *)mg->mg_obj);
    SV *err;

    if (MY_CXT.exit_held)
        XSRETURN_EMPTY;         /* the program is exiting */
    MY_CXT.libvirt_frames++;
    if (!sve_call(aTHX_ slots[0], NULL, NULL, &ST(0), items, G_VOID, NULL, &err)) {
        ENTER;
        SAVETMPS;
        sve_report(aTHX_ err, slots[1], TRUE);
        FREETMPS;
        LEAVE;
    }
    MY_CXT.libvirt_frames--;
    XSRETURN_EMPTY;
}

/* ------------------------------------------------------------------ */
/* 9. the XSUBs, and the helpers they share                           */
/* ------------------------------------------------------------------ */

/* Public calls and dispatches are refused outside the interpreter that
 * registered the loop: libvirt would call that one back. */
static void
sve_require_owner(pTHX_ const char *func)
{
    if (sve_registered == SVE_LOOP_NONE)
        croak("%s: no event loop is registered; call "
              "Sys::Virt::Event::register_default() or register($impl) first", func);
#ifdef MULTIPLICITY
    if (aTHX != sve_owner)
        croak("%s: called from a thread other than the one that registered "
              "the event loop", func);
#endif
}

/*
 * Before a public call into libvirt: forget the reason of an earlier
 * failure.  With a Perl loop, libvirt only passes the call on to the
 * trampolines, which give their reason in MY_CXT.failure; libvirt's own
 * error is kept by its default loop only, and reset only for it (that
 * takes a thread-local lookup and a few calls into libvirt).
 */
static void
sve_reset_failure(pTHX)
{
    dMY_CXT;

    if (MY_CXT.failure)
        SvCUR_set(MY_CXT.failure, 0);
    if (sve_registered == SVE_LOOP_DEFAULT)
        virResetLastError();
}

/* The reason a libvirt call returned -1, for a croak. */
static const char *
sve_failure_reason(pTHX)
{
    dMY_CXT;
    virErrorPtr err;

    if (MY_CXT.failure && SvCUR(MY_CXT.failure))
        return SvPV_nolen(MY_CXT.failure);
    if (sve_registered == SVE_LOOP_DEFAULT) {
        err = virGetLastError();
        if (err && err->message)
            return err->message;
        return "libvirt's default event loop refused it";
    }
    return "the event loop refused it";
}

static sve_public *
sve_public_lookup(pTHX_ sve_kind kind, int id, const char *func)
{
    dMY_CXT;
    sve_public *pub = (sve_public *)sve_idmap_get(&MY_CXT.publics[kind], id);

    if (!pub)
        croak("%s: %s %d is not a live %s created by Sys::Virt::Event::%s",
              func, sve_kind_name[kind], id, sve_kind_name[kind],
              kind == SVE_KIND_HANDLE ? "add_handle" : "add_timeout");
    return pub;
}

/*
 * Back at the program's top level, after a public call or a dispatch:
 * the frees that became due run, and an exit held meanwhile is carried
 * out, before the call returns or croaks.  Held signals run at perl's
 * next statement, once the call's result is where the program put it,
 * as after any other C call that a signal interrupted.
 */
PERL_STATIC_INLINE void
sve_back_at_top_level(pTHX_ my_cxt_t *cxt)
{
    if (cxt->libvirt_frames != 0)
        return;
    if (cxt->pending_head)
        sve_run_pending(aTHX);
#ifdef SVE_HAVE_EV
    if (sve_registered == SVE_LOOP_EV)
        sve_ev_run_frees(aTHX);
#endif
    sve_carry_out_exit(aTHX_ cxt);
}

static int
sve_public_add(pTHX_ sve_kind kind, const sve_fd_arg *fd, int events_or_ms,
               SV *code, const char *func)
{
    dMY_CXT;
    sve_public *pub;
    int id;

    sve_require_owner(aTHX_ func);
    sve_run_pending(aTHX);
    Newxz(pub, 1, sve_public);
    pub->kind = kind;
    pub->code = newSVsv_nomg(code);
    pub->fh = fd && fd->fh ? SvREFCNT_inc_simple_NN(fd->fh) : NULL;
    pub->fork_generation = sve_fork_generation;
#ifdef MULTIPLICITY
    pub->perl = aTHX;
#endif
    sve_reset_failure(aTHX);
    MY_CXT.libvirt_frames++;
    if (kind == SVE_KIND_HANDLE)
        id = virEventAddHandle(fd->fd, events_or_ms, sve_public_handle_cb, pub,
                               sve_public_free);
    else
        id = virEventAddTimeout(events_or_ms, sve_public_timeout_cb, pub,
                                sve_public_free);
    MY_CXT.libvirt_frames--;
    if (id < 0) {
        /* libvirt does not call the free function of a failed add */
        sve_public_release(aTHX_ pub);
        sve_back_at_top_level(aTHX_ &MY_CXT);
        croak("%s: %s", func, sve_failure_reason(aTHX));
    }
    pub->id = id;
    sve_idmap_put(&MY_CXT.publics[kind], id, pub);
    sve_back_at_top_level(aTHX_ &MY_CXT);
    return id;
}

/*
 * The id is checked as the program gave it; the frees that run next may
 * call a destructor that removes that very watch or timer, which then
 * leaves nothing to do.
 */
static bool
sve_public_still_live(pTHX_ sve_kind kind, int id, const char *func)
{
    dMY_CXT;

    sve_require_owner(aTHX_ func);
    sve_public_lookup(aTHX_ kind, id, func);
    sve_run_pending(aTHX);
    return sve_idmap_get(&MY_CXT.publics[kind], id) != NULL;
}

static void
sve_public_update(pTHX_ sve_kind kind, int id, int events_or_ms, const char *func)
{
    dMY_CXT;

    if (!sve_public_still_live(aTHX_ kind, id, func))
        return;
    MY_CXT.libvirt_frames++;
    if (kind == SVE_KIND_HANDLE)
        virEventUpdateHandle(id, events_or_ms);
    else
        virEventUpdateTimeout(id, events_or_ms);
    MY_CXT.libvirt_frames--;
    sve_back_at_top_level(aTHX_ &MY_CXT);
}

static void
sve_public_remove(pTHX_ sve_kind kind, int id, const char *func)
{
    dMY_CXT;
    int rc;

    if (!sve_public_still_live(aTHX_ kind, id, func))
        return;
    /* forget it first: its free function may run before libvirt returns */
    sve_idmap_delete(&MY_CXT.publics[kind], id);
    sve_reset_failure(aTHX);
    MY_CXT.libvirt_frames++;
    if (kind == SVE_KIND_HANDLE)
        rc = virEventRemoveHandle(id);
    else
        rc = virEventRemoveTimeout(id);
    MY_CXT.libvirt_frames--;
    sve_back_at_top_level(aTHX_ &MY_CXT);
    if (rc < 0)
        croak("%s: %s", func, sve_failure_reason(aTHX));
}

/*
 * Before a dispatch: run the frees that became due and pass on deferred
 * updates.  That runs Perl code (a released coderef's DESTROY, the loop's
 * update methods), which may remove the very watch about to be dispatched,
 * or drop the last handle to its record: the record is held meanwhile.
 * FALSE when the watch is gone.
 */
static bool
sve_dispatch_catch_up(pTHX_ sve_record *rec)
{
    dMY_CXT;
    bool gone;

    rec->holders++;
    if (MY_CXT.libvirt_frames == 0 && MY_CXT.pending_head)
        sve_run_pending(aTHX);
    if (MY_CXT.updates)         /* a nested dispatch */
        sve_flush_updates(aTHX);
    gone = rec->state != SVE_LIVE;
    sve_record_unhold(aTHX_ rec);
    return !gone;
}

/*
 * A watch or timer the parent registered, dispatched in a forked child:
 * it is not called (the child must leave the parent's libvirt connections
 * alone), and the loop is told to stop watching it.  That changes the
 * child's copy of the loop only.
 */
static void
sve_silence_inherited(pTHX_ sve_record *rec)
{
    dMY_CXT;

    if (rec->state != SVE_LIVE)
        return;
    MY_CXT.libvirt_frames++;
    MY_CXT.trampolines++;
    sve_tell_loop(aTHX_ rec, rec->kind == SVE_KIND_HANDLE ? 0 : -1);
    MY_CXT.trampolines--;
    MY_CXT.libvirt_frames--;
}

/*
 * The dispatch both helpers share: call the callback of REC, a live
 * record, with a libvirt frame counted, then run the frees that became
 * due.  Whatever leaves the callback early is caught for a moment (dXCPT,
 * see perlguts) to restore the counters, then passed on: an exception
 * from libvirt's own callbacks, whose Perl code may die without an eval
 * (a Sys::Virt callback registered unprotected).  Dispatching while
 * libvirt is calling the loop (from inside add_handle or remove_timeout,
 * say) would re-enter libvirt with its locks held: refused.  Our own
 * callback (a public watch or timer) is called without the detour.
 */
PERL_STATIC_INLINE void
sve_dispatch(pTHX_ sve_record *rec, const char *func, int fd, int events)
{
    dMY_CXT;
    dXCPT;

    if (MY_CXT.trampolines)
        croak("%s: called while libvirt is calling the event loop (inside "
              "add, update or remove); dispatch from the loop itself", func);
    if (UNLIKELY(rec->fork_generation != sve_fork_generation)) {
        sve_silence_inherited(aTHX_ rec);
        return;
    }
    if (((MY_CXT.libvirt_frames == 0 && MY_CXT.pending_head) || MY_CXT.updates) &&
        !sve_dispatch_catch_up(aTHX_ rec))
        return;
    MY_CXT.libvirt_frames++;
    MY_CXT.dispatching++;
    XCPT_TRY_START {
        if (rec->kind == SVE_KIND_HANDLE) {
            if (rec->cb.handle == sve_public_handle_cb)
                sve_public_call(aTHX_ (sve_public *)rec->opaque, 3, rec->id, fd, events);
            else
                rec->cb.handle(rec->id, fd, events, rec->opaque);
        } else {
            if (rec->cb.timeout == sve_public_timeout_cb)
                sve_public_call(aTHX_ (sve_public *)rec->opaque, 1, rec->id, 0, 0);
            else
                rec->cb.timeout(rec->id, rec->opaque);
        }
    } XCPT_TRY_END
    MY_CXT.dispatching--;
    MY_CXT.libvirt_frames--;
    XCPT_CATCH {
        XCPT_RETHROW;
    }
    if (MY_CXT.dispatching == 0 && MY_CXT.updates)
        sve_flush_updates(aTHX);
    sve_back_at_top_level(aTHX_ &MY_CXT);
}

/*
 * libvirt takes one loop per process and ignores later ones: registering
 * another croaks.  TRUE when the same loop is registered already (for a
 * Perl loop, the same object IMPL), which is then nothing to do.
 */
static bool
sve_already_registered(pTHX_ sve_loop wanted, SV *impl, const char *func)
{
    dMY_CXT;
    static const char *const what[] = {
        NULL, "a Perl event loop", "libvirt's default event loop",
        "the native EV loop (Sys::Virt::Event::EV)",
    };

    if (sve_registered == SVE_LOOP_NONE)
        return FALSE;
    if (sve_registered != wanted)
        croak("%s: %s is already registered, and libvirt accepts one loop "
              "per process", func, what[sve_registered]);
#ifdef MULTIPLICITY
    if (aTHX != sve_owner)
        croak("%s: another thread already registered an event loop", func);
#endif
    if (wanted != SVE_LOOP_PERL)
        return TRUE;
    if (!MY_CXT.impl || !SvROK(MY_CXT.impl))
        croak("%s: an event loop is already registered, and libvirt accepts "
              "one loop per process", func);
    if (SvRV(MY_CXT.impl) == SvRV(impl))
        return TRUE;
    croak("%s: an event loop (%s) is already registered, and libvirt "
          "accepts one loop per process", func, sv_reftype(SvRV(MY_CXT.impl), TRUE));
    return FALSE;               /* not reached */
}

static void
sve_registered_now(pTHX_ sve_loop loop)
{
    sve_registered = loop;
    sve_registered_generation = sve_fork_generation;
#ifdef MULTIPLICITY
    sve_owner = aTHX;
#else
    PERL_UNUSED_CONTEXT;
#endif
}

MODULE = Sys::Virt::Event  PACKAGE = Sys::Virt::Event

PROTOTYPES: DISABLE

BOOT:
{
    HV *stash = gv_stashpv("Sys::Virt::Event", GV_ADD);
    static int process_setup_done;

    MY_CXT_INIT;
    sve_init_cxt(aTHX_ &MY_CXT);
    call_atexit(sve_destruct, NULL);
    if (!process_setup_done) {
        process_setup_done = 1;
        pthread_atfork(NULL, NULL, sve_atfork_child);
        wrap_op_checker(OP_EXIT, sve_ck_exit, &sve_next_ck_exit);
    }
    newCONSTSUB(stash, "HANDLE_READABLE", newSViv(VIR_EVENT_HANDLE_READABLE));
    newCONSTSUB(stash, "HANDLE_WRITABLE", newSViv(VIR_EVENT_HANDLE_WRITABLE));
    newCONSTSUB(stash, "HANDLE_ERROR", newSViv(VIR_EVENT_HANDLE_ERROR));
    newCONSTSUB(stash, "HANDLE_HANGUP", newSViv(VIR_EVENT_HANDLE_HANGUP));
    virInitialize();
}

void
CLONE(...)
  CODE:
    /* perl calls CLONE for every class that inherits it: act once */
    if (items == 1 && SvPOK(ST(0)) && strEQ(SvPVX(ST(0)), "Sys::Virt::Event")) {
        MY_CXT_CLONE;
        /* the new interpreter owns nothing of its parent's (but its
         * signal hook: see sve_init_cxt) */
        sve_init_cxt(aTHX_ &MY_CXT);
        call_atexit(sve_destruct, NULL);
    }

void
_register_impl(impl)
    SV *impl
  PREINIT:
    dMY_CXT;
  CODE:
    if (!SvROK(impl) || !SvOBJECT(SvRV(impl)))
        croak("Sys::Virt::Event::register: the implementation must be an object");
    if (sve_already_registered(aTHX_ SVE_LOOP_PERL, impl, "Sys::Virt::Event::register"))
        XSRETURN_EMPTY;         /* the same object again */
    MY_CXT.impl = newSVsv(impl);
    sve_registered_now(aTHX_ SVE_LOOP_PERL);
    virEventRegisterImpl(sve_tramp_add_handle, sve_tramp_update_handle,
                         sve_tramp_remove_handle, sve_tramp_add_timeout,
                         sve_tramp_update_timeout, sve_tramp_remove_timeout);

void
register_default()
  CODE:
    if (sve_already_registered(aTHX_ SVE_LOOP_DEFAULT, NULL,
                               "Sys::Virt::Event::register_default"))
        XSRETURN_EMPTY;
    if (virEventRegisterDefaultImpl() < 0) {
        virErrorPtr err = virGetLastError();
        croak("Sys::Virt::Event::register_default: %s",
              err && err->message ? err->message : "libvirt refused");
    }
    sve_registered_now(aTHX_ SVE_LOOP_DEFAULT);

void
run_default()
  PREINIT:
    dMY_CXT;
    dXCPT;
    int rc = 0;
  CODE:
    if (sve_registered != SVE_LOOP_DEFAULT)
        croak("Sys::Virt::Event::run_default: the default event loop is not "
              "registered; call Sys::Virt::Event::register_default() first");
    sve_require_owner(aTHX_ "Sys::Virt::Event::run_default");
    /* libvirt's loop would serve the parent's watches too, reading the
     * parent's sockets: it cannot be told otherwise */
    if (sve_registered_generation != sve_fork_generation)
        croak("Sys::Virt::Event::run_default: this process was forked after "
              "libvirt's default event loop was registered; the loop's "
              "watches belong to the parent (libvirt connections are not "
              "fork-safe): run it in the parent only");
    /* Callbacks run below libvirt's loop: what they hold waits for it.
     * One that Sys::Virt calls unprotected may die through it: the count
     * is restored on the way out (see sve_dispatch). */
    MY_CXT.libvirt_frames++;
    XCPT_TRY_START {
        rc = virEventRunDefaultImpl();
    } XCPT_TRY_END
    MY_CXT.libvirt_frames--;
    XCPT_CATCH {
        XCPT_RETHROW;
    }
    sve_back_at_top_level(aTHX_ &MY_CXT);
    if (rc < 0) {
        virErrorPtr err = virGetLastError();
        croak("Sys::Virt::Event::run_default: %s",
              err && err->message ? err->message : "libvirt's loop failed");
    }

void
_run_handle_callback(self, watch, fd, events, cb, opaque)
    SV *self
    SveInt watch
    SveInt fd
    SveEvents events
    SveHandleCallback cb
    SveOpaque opaque
  CODE:
    PERL_UNUSED_VAR(self);
    if (cb != opaque)
        croak("Sys::Virt::Event::_run_handle_callback: $cb and $opaque "
              "belong to different watches");
    /* removed earlier in this iteration, or its add has not returned */
    if (cb->state != SVE_LIVE)
        XSRETURN_EMPTY;
    if (watch != cb->id)
        croak("Sys::Virt::Event::_run_handle_callback: $watch is %d but "
              "$cb belongs to watch %d", watch, cb->id);
    if (fd != cb->fd)
        croak("Sys::Virt::Event::_run_handle_callback: $fd is %d but "
              "watch %d is on fd %d", fd, cb->id, cb->fd);
    sve_dispatch(aTHX_ cb, "Sys::Virt::Event::_run_handle_callback", fd, events);

void
_run_timeout_callback(self, timer, cb, opaque)
    SV *self
    SveInt timer
    SveTimeoutCallback cb
    SveOpaque opaque
  CODE:
    PERL_UNUSED_VAR(self);
    if (cb != opaque)
        croak("Sys::Virt::Event::_run_timeout_callback: $cb and $opaque "
              "belong to different timers");
    if (cb->state != SVE_LIVE)
        XSRETURN_EMPTY;
    if (timer != cb->id)
        croak("Sys::Virt::Event::_run_timeout_callback: $timer is %d but "
              "$cb belongs to timer %d", timer, cb->id);
    sve_dispatch(aTHX_ cb, "Sys::Virt::Event::_run_timeout_callback", -1, 0);

void
_free_callback_opaque(self, ff, opaque)
    SV *self
    SveFreeFunc ff
    SveOpaque opaque
  CODE:
    PERL_UNUSED_VAR(self);
    if (ff != opaque)
        croak("Sys::Virt::Event::_free_callback_opaque: $ff and $opaque "
              "belong to different registrations");
    if (ff->state == SVE_SETTLED || ff->state == SVE_FREE_QUEUED)
        XSRETURN_EMPTY;         /* freed already, or about to be */
    if (ff->state != SVE_REMOVED)
        croak("Sys::Virt::Event::_free_callback_opaque: %s %d is still "
              "registered; free it after libvirt removed it",
              sve_kind_name[ff->kind], ff->id);
    sve_queue_free(aTHX_ ff);
    sve_run_pending(aTHX);

SV *
_protect_callback(code, where)
    SveCode code
    SV *where
  PREINIT:
    CV *xsub;
    AV *slots;
  CODE:
    xsub = newXS(NULL, sve_protected_callback, __FILE__);
    slots = newAV();
    av_push(slots, newSVsv_nomg(code));
    av_push(slots, newSVsv(where));
    sv_magicext((SV *)xsub, (SV *)slots, PERL_MAGIC_ext, &sve_protected_vtbl,
                NULL, 0);
    SvREFCNT_dec((SV *)slots);  /* the magic holds it */
    RETVAL = newRV_noinc((SV *)xsub);
  OUTPUT:
    RETVAL

UV
_reference_count(sv)
    SV *sv
  CODE:
    RETVAL = SvREFCNT(sv);
  OUTPUT:
    RETVAL

void
_drop_kept_references(sv, count_before)
    SV *sv
    UV count_before
  CODE:
    /* Sys::Virt's registrations take a reference to their arguments
       before asking libvirt, and when libvirt refuses, the array that
       holds them is never freed: what it took is given back here, and
       only what it took (the caller compared counts). */
    while (SvREFCNT(sv) > count_before && SvREFCNT(sv) > 1)
        SvREFCNT_dec(sv);

void
_run_pending_frees(...)
  PREINIT:
    dMY_CXT;
  CODE:
    PERL_UNUSED_VAR(items);     /* a function, or a method of the loop */
    sve_back_at_top_level(aTHX_ &MY_CXT);

int
_pending_frees(...)
  PREINIT:
    dMY_CXT;
    sve_record *rec;
  CODE:
    PERL_UNUSED_VAR(items);
    RETVAL = 0;
    for (rec = MY_CXT.pending_head; rec; rec = rec->next_pending)
        RETVAL++;
  OUTPUT:
    RETVAL

int
add_handle(fd, events, coderef)
    SveFd fd
    SveEvents events
    SveCode coderef
  CODE:
    RETVAL = sve_public_add(aTHX_ SVE_KIND_HANDLE, &fd, events, coderef,
                            "Sys::Virt::Event::add_handle");
  OUTPUT:
    RETVAL

void
update_handle(watch, events)
    SveInt watch
    SveEvents events
  CODE:
    sve_public_update(aTHX_ SVE_KIND_HANDLE, watch, events,
                      "Sys::Virt::Event::update_handle");

void
remove_handle(watch)
    SveInt watch
  CODE:
    sve_public_remove(aTHX_ SVE_KIND_HANDLE, watch,
                      "Sys::Virt::Event::remove_handle");

int
add_timeout(frequency, coderef)
    SveFrequency frequency
    SveCode coderef
  CODE:
    RETVAL = sve_public_add(aTHX_ SVE_KIND_TIMEOUT, NULL, frequency, coderef,
                            "Sys::Virt::Event::add_timeout");
  OUTPUT:
    RETVAL

void
update_timeout(timer, frequency)
    SveInt timer
    SveFrequency frequency
  CODE:
    sve_public_update(aTHX_ SVE_KIND_TIMEOUT, timer, frequency,
                      "Sys::Virt::Event::update_timeout");

void
remove_timeout(timer)
    SveInt timer
  CODE:
    sve_public_remove(aTHX_ SVE_KIND_TIMEOUT, timer,
                      "Sys::Virt::Event::remove_timeout");

#ifdef SVE_HAVE_EV

MODULE = Sys::Virt::Event  PACKAGE = Sys::Virt::Event::EV

void
_register(self)
    SV *self
  PREINIT:
    dMY_CXT;
    const char *why;
  CODE:
    if (sve_already_registered(aTHX_ SVE_LOOP_EV, NULL,
                               "Sys::Virt::Event::EV::register"))
        XSRETURN_EMPTY;
    why = sve_ev_attach(aTHX);
    if (why)
        croak("Sys::Virt::Event::EV::register: %s", why);
    MY_CXT.impl = newSVsv(self);
    sve_registered_now(aTHX_ SVE_LOOP_EV);
    sve_ev_register(aTHX_ &MY_CXT.libvirt_frames);

void
_ids(kind)
    int kind
  PREINIT:
    AV *ids;
  PPCODE:
    if (sve_registered != SVE_LOOP_EV)
        XSRETURN_EMPTY;
    ids = (AV *)sv_2mortal((SV *)newAV());
    sve_ev_ids(aTHX_ kind ? SVE_KIND_TIMEOUT : SVE_KIND_HANDLE, ids);
    EXTEND(SP, AvFILLp(ids) + 1);
    while (AvFILLp(ids) >= 0)
        PUSHs(sv_2mortal(av_shift(ids)));

int
_pending_frees()
  CODE:
    RETVAL = sve_registered == SVE_LOOP_EV ? sve_ev_pending_frees() : 0;
  OUTPUT:
    RETVAL

int
_zero_timers()
  CODE:
    RETVAL = sve_registered == SVE_LOOP_EV ? sve_ev_zero_timers() : 0;
  OUTPUT:
    RETVAL

void
_run_frees()
  PREINIT:
    dMY_CXT;
  CODE:
    if (sve_registered == SVE_LOOP_EV)
        sve_back_at_top_level(aTHX_ &MY_CXT);

#endif
