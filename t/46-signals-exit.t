use strict;
use warnings;

# A Perl signal handler never runs below a libvirt frame, and exit()
# never unwinds one: both wait until libvirt has returned, then take
# effect as they would without this module.  Each case runs in a child
# process with a time limit, once for every loop we ship: a Perl subclass
# (TestLoop), Sys::Virt::Event::AnyEvent over EV and over its pure-Perl
# backend, and libvirt's default loop where the case applies to it.
#
# Signals are raised from inside the code under test (kill ... $$), so
# each case is deterministic: the handler is pending at the first Perl
# statement that follows.

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use TestUtil qw(in_child have_sys_virt);
use Sys::Virt::Event;

# set in the children, for their END blocks
our ($RUN, $DOM, $EXITED);

# A loop class whose methods first run what the case put in %Injected::DO
# (once), then do their job.
{
    package Injected;
    our %DO;
    for my $method (qw(add_handle update_handle remove_handle
                       add_timeout update_timeout remove_timeout)) {
        no strict 'refs';
        *{"Injected::$method"} = sub {
            my $self = shift;
            if (my $do = delete $DO{$method}) {
                $do->();
            }
            my $super = "SUPER::$method";
            return $self->$super(@_);
        };
    }
}

sub have_anyevent {
    my ($model) = @_;
    local $@;
    return 0 unless eval { require AnyEvent; 1 };
    return $model ne 'EV' || eval { require EV; 1 };
}

# name => how to set up that loop in a child: returns a sub that runs the
# loop for about $ms milliseconds, and whether the loop has Perl methods.
my @LOOPS = (
    ['a Perl subclass (TestLoop)', sub {
        require TestLoop;
        @Injected::ISA = ('TestLoop');
        my $loop = Injected->new;
        $loop->register;
        return (sub { my ($ms) = @_; $loop->run_once($ms) for 1 .. 3 }, 1);
     }, ''],
    (map {
        my $model = $_;
        ["Sys::Virt::Event::AnyEvent over $model", sub {
            $ENV{PERL_ANYEVENT_MODEL} = $model;
            require AnyEvent;
            require Sys::Virt::Event::AnyEvent;
            @Injected::ISA = ('Sys::Virt::Event::AnyEvent');
            Injected->new->register;
            return (sub {
                my ($ms) = @_;
                my $cv = AnyEvent->condvar;
                my $t = AnyEvent->timer(after => $ms / 1000, cb => sub { $cv->send });
                $cv->recv;
            }, 1);
         }, have_anyevent($model) ? '' : "AnyEvent with $model is not installed"]
    } qw(EV Perl)),
    ["libvirt's default loop", sub {
        Sys::Virt::Event::register_default();
        # a timer bounds each iteration
        Sys::Virt::Event::add_timeout(5, sub { });
        return (sub {
            my ($ms) = @_;
            Sys::Virt::Event::run_default() for 1 .. 1 + $ms / 5;
        }, 0);
     }, ''],
);

# Runs $case->($run) in a child with the loop set up; returns in_child's
# result, with the child's "key=value" lines in {out}.
sub in_loop_child {
    my ($setup, $case) = @_;
    my $r = in_child(sub {
        my ($run, $has_methods) = $setup->();
        $case->($run, $has_methods);
    }, timeout => 20);
    $r->{out} = { map { /^(\w+)=(.*)\z/ ? ($1, $2) : () } split /\n/, $r->{output} };
    return $r;
}

# In a child: an END block that runs the loop, to show that an exit left
# nothing counted; it prints end_fired=N.
sub end_runs_the_loop {
    ($RUN) = @_;
    eval q{
        END {
            my $fired = 0;
            my $t = Sys::Virt::Event::add_timeout(0, sub { $fired++ });
            # bounded: a slow machine may need more than one run
            for (1 .. 100) { last if $fired; $main::RUN->(20) }
            Sys::Virt::Event::remove_timeout($t);
            print "end_fired=$fired\n";
        }
        1;
    } or die $@;
    return;
}

sub clean_exit {
    my ($r, $status, $name) = @_;
    ok(!$r->{timed_out} && !$r->{signal}, "$name: no hang, no crash")
        or diag($r->{output});
    is($r->{exit}, $status, "$name: exit status $status");
}

for my $l (@LOOPS) {
    my ($loop_name, $setup, $missing) = @$l;
    SKIP: {
        skip $missing, 1 if $missing;
        my $is_default = $loop_name =~ /default/;

        subtest "$loop_name: a dying signal handler, signal raised in a loop method" => sub {
            plan skip_all => 'the default loop has no Perl methods' if $is_default;
            my $r = in_loop_child($setup, sub {
                local $SIG{USR1} = sub { print "handler=ran\n"; die "usr1\n" };
                local $Injected::DO{add_timeout} = sub { kill 'USR1', $$; print "method=continued\n" };
                my $id;
                my $ok = eval { $id = Sys::Virt::Event::add_timeout(-1, sub { }); print "statement=finished\n"; 1 };
                (my $err = $ok ? 'none' : $@) =~ s/\n/\\n/g;
                print "error=$err\n";
                print 'id=', ($id // 'undef'), "\n";
                Sys::Virt::Event::remove_timeout($id) if $id;
            });
            clean_exit($r, 0, 'child');
            is($r->{out}{method}, 'continued', 'the loop method ran to its end');
            is($r->{out}{error}, 'usr1\n', 'the handler\'s die reached the program, as it is');
            ok(($r->{out}{id} // 'undef') =~ /^[1-9]/, 'the call had completed: the timer was added')
                or diag($r->{output});
            ok(!$r->{out}{statement}, 'the handler ran at the next statement');
            unlike($r->{output}, qr/method of .* died/, 'not reported as the method\'s error');
        };

        subtest "$loop_name: a dying signal handler, signal raised while libvirt calls the loop during an API call" => sub {
            plan skip_all => 'Sys::Virt is not installed' unless have_sys_virt();
            plan skip_all => 'the default loop has no Perl methods' if $is_default;
            my $r = in_loop_child($setup, sub {
                require Sys::Virt;
                my $conn = Sys::Virt->new(uri => 'test:///default');
                my $cb = $conn->domain_event_register_any(undef, 0, sub { });
                my $dom = $conn->get_domain_by_name('test');
                local $SIG{USR1} = sub { die "usr1\n" };
                # libvirt flips its event timer while destroy queues the event
                local $Injected::DO{update_timeout} = sub { kill 'USR1', $$ };
                my $ok = eval { $dom->destroy; print "after=destroy\n"; 1 };
                (my $err = $ok ? 'none' : $@) =~ s/\n/\\n/g;
                print "error=$err\n";
                print 'active=', $dom->is_active ? 1 : 0, "\n";
                $conn->domain_event_deregister_any($cb);
            });
            clean_exit($r, 0, 'child');
            is($r->{out}{error}, 'usr1\n', 'the handler\'s die reached the program');
            is($r->{out}{active}, 0, 'after the API call had done its work');
            unlike($r->{output}, qr/method of .* died/, 'not reported as a loop method\'s error');
        };

        subtest "$loop_name: a dying signal handler, signal raised in a callback" => sub {
            my $r = in_loop_child($setup, sub {
                my ($run) = @_;
                my $handled = 0;
                local $SIG{USR1} = sub { $handled++; print "handler=ran\n"; die "usr1\n" };
                my $id = Sys::Virt::Event::add_timeout(0, sub {
                    return if $handled;
                    kill 'USR1', $$;
                    print "callback=continued\n";
                });
                # bounded, and more than one run: under valgrind the
                # first can end before the loop has looked at the timer
                my $ok = eval { for (1 .. 100) { $run->(30); last if $handled } 1 };
                (my $err = $ok ? 'none' : $@) =~ s/\n/\\n/g;
                print "error=$err\n";
                Sys::Virt::Event::remove_timeout($id);
            });
            clean_exit($r, 0, 'child');
            is($r->{out}{callback}, 'continued', 'the callback ran to its end');
            is($r->{out}{handler}, 'ran', 'then the handler ran');
            unlike($r->{output}, qr/callback of timer \d+ died/, 'not reported as the callback\'s error');
            if ($loop_name =~ /over EV/) {
                # EV catches what its watchers' callbacks die with
                like($r->{output}, qr/usr1/, 'the die left the dispatch, to EV');
            } else {
                is($r->{out}{error}, 'usr1\n', 'the die left the dispatch, to the program');
            }
        };

        subtest "$loop_name: exit in a callback" => sub {
            my $r = in_loop_child($setup, sub {
                my ($run) = @_;
                end_runs_the_loop($run);
                # (once: END runs this timer again)
                Sys::Virt::Event::add_timeout(0, sub { exit 6 unless $main::EXITED++ });
                $run->(30) for 1 .. 100;      # bounded; the first exits
                print "after=run\n";
                POSIX::_exit(0);
            });
            clean_exit($r, 6, 'child');
            ok(!$r->{out}{after}, 'the program did not go on');
            ok(($r->{out}{end_fired} // 0) >= 1, 'an END block could run the loop');
            unlike($r->{output}, qr/CRITICAL|died/, 'nothing reported');
        };

        subtest "$loop_name: exit in a loop method, and from \$DIED" => sub {
            plan skip_all => 'the default loop has no Perl methods' if $is_default;
            for my $how ('exit in the method', 'exit from $DIED') {
                my $r = in_loop_child($setup, sub {
                    my ($run) = @_;
                    end_runs_the_loop($run);
                    if ($how eq 'exit in the method') {
                        $Injected::DO{add_timeout} = sub { exit 3 };
                    } else {
                        $Sys::Virt::Event::DIED = sub { print "died_hook=called\n"; exit 3 };
                        $Injected::DO{add_timeout} = sub { die "broken\n" };
                    }
                    my $ok = eval { Sys::Virt::Event::add_timeout(-1, sub { }); 1 };
                    print "after=call\n";
                    POSIX::_exit(0);
                });
                clean_exit($r, 3, $how);
                ok(!$r->{out}{after}, "$how: the program did not go on after the call");
                ok(($r->{out}{end_fired} // 0) >= 1, "$how: an END block could run the loop");
                is($r->{out}{died_hook}, 'called', "$how: \$DIED was called")
                    if $how =~ /DIED/;
                unlike($r->{output}, qr/reporting it failed|method of .* died/,
                       "$how: nothing reported as an error");
            }
        };

        subtest "$loop_name: \$SIG{TERM} = sub { exit }, signal raised while libvirt calls the loop" => sub {
            plan skip_all => 'Sys::Virt is not installed' unless have_sys_virt();
            plan skip_all => 'the default loop has no Perl methods' if $is_default;
            my $r = in_loop_child($setup, sub {
                require Sys::Virt;
                my $conn = Sys::Virt->new(uri => 'test:///default');
                my $dom = $conn->get_domain_by_name('test');
                eval q{ END { print 'end_active=', $main::DOM->is_active ? 1 : 0, "\n" } 1 } or die $@;
                $main::DOM = $dom;
                $SIG{TERM} = sub { exit 5 };
                $Injected::DO{add_timeout} = sub { kill 'TERM', $$ };
                my $cb = $conn->domain_event_register_any(undef, 0, sub { });
                print "registered=1\n";
                POSIX::_exit(0);
            });
            clean_exit($r, 5, 'child');
            ok(!$r->{out}{registered}, 'the exit happened once the API call had returned');
            is($r->{out}{end_active}, 1, 'END blocks could still call libvirt');
        };
    }
}

done_testing;
