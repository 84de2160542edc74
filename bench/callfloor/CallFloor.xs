/*
 * The cheapest ways an XSUB can call a Perl coderef, as floors for the
 * dispatch figures of bench/dispatch.pl.  Each takes the arguments a
 * dispatch takes, checks none of them and passes the caller's own SVs on.
 *
 *   unprotected: call_sv, nothing more.  A die in the coderef unwinds the
 *       XSUB's C frame, and `last` in it reaches the caller's loop.
 *   protected: on a stack of its own (PUSHSTACK) and under G_EVAL, then a
 *       look at $@: the least a dispatch must do so that neither can leave
 *       the callback, which Sys::Virt::Event guarantees.
 *
 * scalar_protected is the same protected call in scalar context, with any
 * arguments, returning the result: what libvirt's add and remove through a
 * Perl loop need at the least, twice (the implementation's add_handle,
 * then its remove_handle).
 */
#define PERL_NO_GET_CONTEXT
#include "EXTERN.h"
#include "perl.h"
#include "XSUB.h"

static void
call_floor(pTHX_ SV *code, SV **args, int nargs, bool protect)
{
    dSP;
    int i;

    if (protect)
        PUSHSTACKi(PERLSI_MAGIC);
    PUSHMARK(SP);
    EXTEND(SP, nargs);
    for (i = 0; i < nargs; i++)
        PUSHs(args[i]);
    PUTBACK;
    if (protect) {
        call_sv(code, G_VOID | G_EVAL);
        POPSTACK;
        if (SvTRUE(ERRSV))
            warn("Bench::CallFloor: the coderef died");
    } else {
        call_sv(code, G_VOID | G_DISCARD);
    }
}

MODULE = Bench::CallFloor  PACKAGE = Bench::CallFloor

PROTOTYPES: DISABLE

void
handle_unprotected(self, watch, fd, events, code, opaque)
    SV *self
    SV *watch
    SV *fd
    SV *events
    SV *code
    SV *opaque
  CODE:
    {
        SV *args[3] = { watch, fd, events };
        PERL_UNUSED_VAR(self);
        PERL_UNUSED_VAR(opaque);
        call_floor(aTHX_ code, args, 3, FALSE);
    }

void
handle_protected(self, watch, fd, events, code, opaque)
    SV *self
    SV *watch
    SV *fd
    SV *events
    SV *code
    SV *opaque
  CODE:
    {
        SV *args[3] = { watch, fd, events };
        PERL_UNUSED_VAR(self);
        PERL_UNUSED_VAR(opaque);
        call_floor(aTHX_ code, args, 3, TRUE);
    }

void
timer_unprotected(self, timer, code, opaque)
    SV *self
    SV *timer
    SV *code
    SV *opaque
  CODE:
    PERL_UNUSED_VAR(self);
    PERL_UNUSED_VAR(opaque);
    call_floor(aTHX_ code, &timer, 1, FALSE);

void
timer_protected(self, timer, code, opaque)
    SV *self
    SV *timer
    SV *code
    SV *opaque
  CODE:
    PERL_UNUSED_VAR(self);
    PERL_UNUSED_VAR(opaque);
    call_floor(aTHX_ code, &timer, 1, TRUE);

void
scalar_protected(code, ...)
    SV *code
  PPCODE:
    {
        SV *args[8];
        SV *ret;
        int i, nargs = items - 1;

        if (nargs > 8)
            croak("Bench::CallFloor::scalar_protected: at most 8 arguments");
        for (i = 0; i < nargs; i++)     /* ST() is gone once the stack switches */
            args[i] = ST(i + 1);
        PUSHSTACKi(PERLSI_MAGIC);
        PUSHMARK(SP);
        EXTEND(SP, nargs);
        for (i = 0; i < nargs; i++)
            PUSHs(args[i]);
        PUTBACK;
        call_sv(code, G_SCALAR | G_EVAL);
        SPAGAIN;
        ret = POPs;
        PUTBACK;
        POPSTACK;
        SPAGAIN;
        if (SvTRUE(ERRSV))
            warn("Bench::CallFloor: the coderef died");
        XPUSHs(ret);
    }
