/*
 * sve.h: what Event.xs and the native libev loop (evloop.c) share.
 *
 * Event.xs owns the per-interpreter state and everything that calls into
 * Perl; evloop.c hands libvirt C functions that drive EV's default loop
 * directly.  They meet here: the kinds of registration, the process's
 * fork generation, the one-time refusal of a foreign thread, and the
 * counter of libvirt frames below Perl (what holds signals, exit and
 * frees; see section 5 of Event.xs).
 */
#ifndef SVE_H
#define SVE_H

typedef enum {
    SVE_KIND_HANDLE,
    SVE_KIND_TIMEOUT,
} sve_kind;

/* Event.xs */

/* Counts the forks this process descends from (pthread_atfork). */
extern volatile int sve_fork_generation;

/* Says once per process that libvirt called from a foreign thread. */
void sve_refuse_foreign(const char *what);

/* Why the last call into the loop failed, for the public call's croak. */
void sve_note_failure(pTHX_ const char *why);

/* Public watches and timers (Event.xs, section 7): the C callbacks libvirt
 * is given for them, and the call of the program's coderef they make,
 * under G_EVAL (nothing leaves it early), which a loop may make directly
 * from the owning interpreter. */
typedef struct sve_public sve_public;
void sve_public_handle_cb(int watch, int fd, int events, void *opaque);
void sve_public_timeout_cb(int timer, void *opaque);
void sve_public_call(pTHX_ sve_public *pub, int nargs, int a0, int a1, int a2);

#ifdef SVE_HAVE_EV
/* evloop.c: the native loop (Sys::Virt::Event::EV) */

/* NULL when EV's API is usable (EV is loaded), else why not.  Croaks
 * when EV's API is of another version than the one built against. */
const char *sve_ev_attach(pTHX);

/* Registers the native loop with libvirt, for the calling interpreter,
 * whose counter of libvirt frames is LIBVIRT_FRAMES. */
void sve_ev_register(pTHX_ int *libvirt_frames);

/* The interpreter is going away: refuse every later call quietly. */
void sve_ev_retire(void);

/* In a forked child (pthread_atfork). */
void sve_ev_forked(void);

/* Runs the frees that are due, unless a libvirt frame is below us. */
void sve_ev_run_frees(pTHX);

/* Introspection: ids of live watches or timers pushed onto OUT; frees
 * waiting; live timers of interval 0. */
void sve_ev_ids(pTHX_ sve_kind kind, AV *out);
int sve_ev_pending_frees(void);
int sve_ev_zero_timers(void);
#endif

#endif
