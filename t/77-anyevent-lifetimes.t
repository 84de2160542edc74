use strict;
use warnings;

# Sys::Virt::Event::AnyEvent where a watch or timer outlives what it
# stood on: AnyEvent failing to make a watcher, the process forking, the
# watched descriptor being closed behind the loop's back.
#
# Every case runs in a child process of its own, on each backend: the
# loop must be registered once per process, and the backend (EV, chosen
# by PERL_ANYEVENT_MODEL, with LIBEV_FLAGS for EV's poll() backend, or
# AnyEvent's pure-Perl loop) is picked by AnyEvent when a child makes its
# first watcher.  This process never makes one.

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use POSIX ();
use TestUtil qw(in_child child_case have_sys_virt anyevent_run_until
                anyevent_run_for report);

BEGIN {
    plan skip_all => 'AnyEvent is not installed' unless eval { require AnyEvent; 1 };
}

use Sys::Virt::Event qw(:constants);
use Sys::Virt::Event::AnyEvent;

# [name, environment, what it needs]
my @BACKENDS = (
    ['EV', { PERL_ANYEVENT_MODEL => 'EV' }, 'AnyEvent::Impl::EV'],
    ['EV poll', { PERL_ANYEVENT_MODEL => 'EV', LIBEV_FLAGS => 2 }, 'AnyEvent::Impl::EV'],
    ['Perl', { PERL_ANYEVENT_MODEL => 'Perl' }, 'AnyEvent::Impl::Perl'],
);

# -- helpers, for the children -------------------------------------------------


sub run_until { return anyevent_run_until(@_) }

sub run_for { return anyevent_run_for(@_) }

# CPU seconds this process has used.
sub cpu {
    my ($user, $system) = times;
    return $user + $system;
}

# Selects the backend, registers the loop, reports which backend runs.
sub start_loop {
    my ($env) = @_;
    @ENV{keys %$env} = values %$env;
    my $loop = Sys::Virt::Event::AnyEvent->register(native => 0);
    my $model = AnyEvent::detect();
    my $ev = '';
    if ($model eq 'AnyEvent::Impl::EV') {
        my %names = (EV::BACKEND_SELECT() => 'select', EV::BACKEND_POLL() => 'poll',
                     EV::BACKEND_EPOLL() => 'epoll');
        $ev = $names{EV::backend()} // EV::backend();
    }
    report(model => $model, ev_backend => $ev);
    return $loop;
}

# The backend's METHOD ("io" or "timer") dies the next time it is called,
# until the returned guard goes.
sub fail_once {
    my ($method) = @_;
    my $class = AnyEvent::detect();
    no strict 'refs';
    no warnings 'redefine';
    my $orig = \&{"${class}::$method"};
    my $armed = 1;
    *{"${class}::$method"} = sub {
        if ($armed) {
            $armed = 0;
            die "no $method watcher this time\n";
        }
        goto &$orig;
    };
    return Restore->new(sub { *{"${class}::$method"} = $orig });
}

{
    package Restore;
    sub new { my ($class, $code) = @_; return bless { code => $code }, $class }
    sub DESTROY { $_[0]{code}->() }
}

# Counts each entry into the loop's own dispatch, per watch or timer id,
# and each call into Sys::Virt::Event's dispatch helpers.
our (%entered, %helper);
sub count_dispatches {
    no strict 'refs';
    no warnings 'redefine';
    for my $name (qw(_dispatch_watch _dispatch_timer _run_zero_timers)) {
        my $orig = \&{"Sys::Virt::Event::AnyEvent::$name"};
        *{"Sys::Virt::Event::AnyEvent::$name"} = sub {
            $entered{$name eq '_run_zero_timers' ? 'zero' : "$name $_[1]"}++;
            goto &$orig;
        };
    }
    for my $name (qw(_run_handle_callback _run_timeout_callback)) {
        *{"Sys::Virt::Event::AnyEvent::$name"} = sub {
            $helper{"$name $_[1]"}++;
            my $self = shift;
            return $self->${\"Sys::Virt::Event::$name"}(@_);
        };
    }
    return;
}

# The errors reported through $Sys::Virt::Event::DIED while $code runs.
sub errors_of {
    my ($code) = @_;
    my @errors;
    local $Sys::Virt::Event::DIED = sub { push @errors, "$_[1]: $_[0]" };
    $code->();
    return join ' | ', map { (my $e = $_) =~ s/\s+\z//; $e } @errors;
}

# Per backend: skips unless this perl has it; the children check the rest.
sub for_each_backend {
    my ($code) = @_;
    for my $backend (@BACKENDS) {
        my ($name, $env, $class) = @$backend;
        SKIP: {
            (my $file = "$class.pm") =~ s{::}{/}g;
            my $have = in_child(sub { exit(eval { require $file; 1 } ? 0 : 3) }, timeout => 20);
            skip "$name: AnyEvent backend $class is not installed", 1
                unless defined $have->{exit} && $have->{exit} == 0;
            $code->($name, $env);
        }
    }
    return;
}

# -- 1. state changes only once the change succeeded --------------------------

for_each_backend(sub {
    my ($name, $env) = @_;

    my $r = child_case("$name: a watch's watchers cannot be made", sub {
        my $loop = start_loop($env);
        pipe(my $pr, my $pw) or die "pipe: $!";
        syswrite $pw, 'x';      # readable from now on

        # Each watch: set to 0, then to READABLE while its watcher cannot
        # be made, then again in a way that needs the same watcher.
        my (%fired, %id);
        for my $name (qw(public loop todo)) {
            $id{$name} = Sys::Virt::Event::add_handle(fileno $pr, HANDLE_READABLE,
                                                      sub { push @{$fired{$name}}, $_[2] });
            Sys::Virt::Event::update_handle($id{$name}, 0);
            report("failed_$name" => errors_of(sub {
                my $failing = fail_once('io');
                Sys::Virt::Event::update_handle($id{$name}, HANDLE_READABLE);
            }));
        }
        report(fired_after_failure => run_until(sub { %fired }, 0.3));
        # what libvirt may ask next: a mask that needs the same watcher
        # (ERROR is reported anyway)
        report(public_again => errors_of(sub {
            Sys::Virt::Event::update_handle($id{public}, HANDLE_READABLE | HANDLE_ERROR);
        }));
        # the same mask, as libvirt's hook passes it to the loop
        $loop->update_handle($id{loop}, HANDLE_READABLE);
        # the same mask through libvirt
        Sys::Virt::Event::update_handle($id{todo}, HANDLE_READABLE);
        run_until(sub { keys %fired == 3 }, 2);
        report(map { ("fired_$_" => $fired{$_} ? $fired{$_}[0] : 0) } keys %id);
        Sys::Virt::Event::remove_handle($_) for values %id;
        sysread $pr, my $buf, 10;

        # a live watch: an update that fails leaves it as it was
        my @fired;
        my $watch = Sys::Virt::Event::add_handle(fileno $pr, HANDLE_READABLE,
                                                 sub { push @fired, $_[2] });
        report(failed_change => errors_of(sub {
            my $failing = fail_once('io');
            Sys::Virt::Event::update_handle($watch, HANDLE_READABLE | HANDLE_WRITABLE);
        }));
        syswrite $pw, 'y';
        report(kept_old_mask => run_until(sub { @fired }, 5),
               kept_events => $fired[0]);
        sysread $pr, $buf, 10;

        # an add that fails leaves nothing behind
        my $before = join ',', $loop->watches;
        my $error;
        {
            my $failing = fail_once('io');
            $error = eval { Sys::Virt::Event::add_handle(fileno $pr, HANDLE_READABLE, sub { }); 1 }
                ? '' : "$@";
        }
        report(add_error => $error, watches_added => join(',', $loop->watches) ne $before ? 1 : 0);
        my $ok = Sys::Virt::Event::add_handle(fileno $pr, HANDLE_READABLE, sub { });
        report(next_add => $ok);
        Sys::Virt::Event::remove_handle($_) for $watch, $ok;
        report(drained => $loop->drain(2) ? 1 : 0, idle => $loop->is_idle ? 1 : 0);
    });
    for my $way (qw(public loop todo)) {
        like($r->{"failed_$way"}, qr/update_handle.*no io watcher this time/,
             "$name: making a watcher died, and was reported ($way)");
    }
    is($r->{fired_after_failure}, 0, "$name: ... the watches have no watcher then");
    is($r->{public_again}, '', "$name: a mask that needs the same watcher: no error");
    is($r->{fired_public}, HANDLE_READABLE,
       "$name: ... and the watch fires (READABLE): the update is not taken for a no-op");
    is($r->{fired_loop}, HANDLE_READABLE,
       "$name: the same mask again, given to the loop: the watch fires (READABLE)");
    is($r->{fired_todo}, HANDLE_READABLE,
       "$name: the same mask again, through libvirt: the watch fires");
    like($r->{failed_change}, qr/no io watcher this time/,
         "$name: a change of mask whose watchers cannot be made is reported");
    is($r->{kept_old_mask}, 1, "$name: ... and the watch keeps its old watchers: it fires");
    is($r->{kept_events}, HANDLE_READABLE, "$name: ... for its old mask");
    like($r->{add_error}, qr/add_handle/, "$name: an add whose watcher cannot be made croaks");
    is($r->{watches_added}, 0, "$name: ... and leaves no watch behind");
    ok($r->{next_add}, "$name: the next add works");
    is($r->{drained}, 1, "$name: all removed and freed");
    is($r->{idle}, 1, "$name: ... the loop is idle");

    $r = child_case("$name: a timer's watcher cannot be made", sub {
        my $loop = start_loop($env);
        my %count;

        # a live timer whose change fails keeps firing as it did
        my $timer = Sys::Virt::Event::add_timeout(10, sub { $count{live}++ });
        report(first => run_until(sub { $count{live} }, 5));
        report(failed_change => errors_of(sub {
            my $failing = fail_once('timer');
            Sys::Virt::Event::update_timeout($timer, 20);
        }));
        $count{live} = 0;
        report(kept => run_until(sub { $count{live} >= 2 }, 5));
        Sys::Virt::Event::update_timeout($timer, -1);
        $count{live} = 0;
        run_for(0.1);
        report(disabled => $count{live});

        # from -1 to 0: the watcher that fires such timers cannot be made
        report(failed_zero => errors_of(sub {
            my $failing = fail_once('io');
            Sys::Virt::Event::update_timeout($timer, 0);
        }));
        report(drained_after_failed_zero => $loop->drain(1) ? 1 : 0);
        # 0 again, through libvirt: passed on again, since the loop died
        # taking it the first time
        Sys::Virt::Event::update_timeout($timer, 0);
        report(zero_fires => run_until(sub { $count{live} >= 3 }, 5));
        Sys::Virt::Event::update_timeout($timer, -1);
        run_for(0.05);      # the watcher of 0 ms timers goes once unused

        # adds that fail leave nothing behind
        my %error;
        for my $ms (10, 0) {
            my $failing = fail_once($ms ? 'timer' : 'io');
            $error{$ms} = eval { Sys::Virt::Event::add_timeout($ms, sub { $count{ghost}++ }); 1 }
                ? '' : "$@";
        }
        report(add_error => $error{10}, add_zero_error => $error{0},
               timers => join(',', $loop->timers));
        report(drained => $loop->drain(1) ? 1 : 0);
        run_for(0.1);
        report(ghost => $count{ghost} // 0);
        Sys::Virt::Event::remove_timeout($timer);
        report(idle => ($loop->drain(2) && $loop->is_idle) ? 1 : 0);
    });
    is($r->{first}, 1, "$name: a 10 ms timer fires");
    like($r->{failed_change}, qr/update_timeout.*no timer watcher this time/,
         "$name: changing it, making its watcher died, and was reported");
    is($r->{kept}, 1, "$name: ... and it keeps firing as it did");
    is($r->{disabled}, 0, "$name: set to -1, it stops");
    like($r->{failed_zero}, qr/no io watcher this time/,
         "$name: setting it to 0 failed (the watcher of 0 ms timers)");
    is($r->{drained_after_failed_zero}, 1, "$name: ... and it is not left half at 0: the loop drains");
    is($r->{zero_fires}, 1, "$name: set to 0 again, through libvirt, it fires");
    like($r->{add_error}, qr/add_timeout/, "$name: an add whose timer cannot be made croaks");
    like($r->{add_zero_error}, qr/add_timeout/, "$name: ... so does one of 0 ms");
    like($r->{timers}, qr/\A\d+\z/, "$name: ... and they leave no timer behind");
    is($r->{drained}, 1, "$name: ... nor a 0 ms timer to wait for");
    is($r->{ghost}, 0, "$name: ... nothing of them fires");
    is($r->{idle}, 1, "$name: all removed and freed");
});

# -- 2. fork -------------------------------------------------------------------------

# In a child (of the test) with the loop registered: a public watch on a
# readable pipe, a public timer and a 0 ms timer.  It forks; the
# grandchild runs its loop, then the child runs its own.
sub fork_case {
    my ($name, $env, $grandchild) = @_;
    return child_case($name, sub {
        my $loop = start_loop($env);
        count_dispatches();
        pipe(my $pr, my $pw) or die "pipe: $!";
        syswrite $pw, 'x';
        my %calls;
        my %id = (
            watch => Sys::Virt::Event::add_handle(fileno $pr, HANDLE_READABLE,
                                                  sub { push @{$calls{watch}}, $$ }),
            timer => Sys::Virt::Event::add_timeout(20, sub { push @{$calls{timer}}, $$ }),
            zero  => Sys::Virt::Event::add_timeout(0, sub { push @{$calls{zero}}, $$ }),
        );
        # the parent's loop is running when it forks
        run_until(sub { $calls{watch} && $calls{timer} && $calls{zero} }, 5);
        %calls = ();
        %entered = %helper = ();

        my $r = in_child(sub {
            my @warnings;
            local $SIG{__WARN__} = sub { push @warnings, @_ };
            $grandchild->($loop, \%id, \%calls, $pr);
            report(
                parent_calls => join(',', map { "$_:" . scalar @{$calls{$_}} } sort keys %calls),
                entered_inherited => inherited(\%entered, \%id),
                helper_inherited => inherited(\%helper, \%id),
                readable => _readable($pr),
                warnings => join('', @warnings),
            );
        }, timeout => 20);
        print map { "grandchild_$_\n" } split /\n/, $r->{output};
        report(grandchild_exit => $r->{exit} // "signal $r->{signal}");

        # the parent has lost nothing
        %calls = ();
        my $after = run_until(sub { $calls{watch} && $calls{timer} && $calls{zero} }, 5);
        my $got = sysread($pr, my $buf, 10);
        report(parent_after => $after,
               parent_pids => join(',', map { $_->[0] == $$ ? 'self' : 'other' }
                                   grep { @$_ } values %calls),
               parent_data => $got ? $buf : '');
        Sys::Virt::Event::remove_handle($id{watch});
        Sys::Virt::Event::remove_timeout($_) for @id{qw(timer zero)};
        report(parent_idle => ($loop->drain(2) && $loop->is_idle) ? 1 : 0);
    });
}

# The counts of COUNTS ("name id" => n) that are about the inherited
# watch or timers of ID, as "name id=n,...".
sub inherited {
    my ($counts, $id) = @_;
    my @found;
    for my $key (sort keys %$counts) {
        my ($name, $n) = $key =~ /\A(\w+) (\d+)\z/ or next;
        my @ids = $name =~ /watch|handle/ ? $id->{watch} : @$id{qw(timer zero)};
        push @found, "$key=$counts->{$key}" if grep { $_ == $n } @ids;
    }
    return join ',', @found;
}

sub _readable {
    my ($fh) = @_;
    my $bits = '';
    vec($bits, fileno $fh, 1) = 1;
    return select($bits, undef, undef, 0) > 0 ? 1 : 0;
}

for_each_backend(sub {
    my ($name, $env) = @_;

    # The grandchild only runs its loop: it must notice by itself.
    my $r = fork_case("$name: fork, the child only runs the loop", $env, sub {
        my ($loop, $id, $calls) = @_;
        my $cpu = cpu();
        run_for(0.3);
        my $entered = 0;
        $entered += $_ for values %entered;
        report(cpu => sprintf('%.3f', cpu() - $cpu), entered => $entered);
    });
    is($r->{grandchild_exit}, 0, "$name: the child ended normally")
        or diag($r->{''});
    is($r->{grandchild_parent_calls}, '',
       "$name: the child never calls the parent's watch, timer or 0 ms timer");
    is($r->{grandchild_helper_inherited}, '', "$name: ... nor asks Sys::Virt::Event to");
    cmp_ok($r->{grandchild_entered} // 9, '<=', 1,
           "$name: ... the loop's dispatch is entered once at most, and finds out");
    cmp_ok($r->{grandchild_cpu} // 9, '<', 0.15,
           "$name: the child does not spin ($r->{grandchild_cpu} s of CPU in 0.3 s)");
    is($r->{grandchild_readable}, 1, "$name: the child left the parent's data unread");
    is($r->{grandchild_warnings}, '', "$name: no warnings in the child");
    is($r->{parent_after}, 1, "$name: then the parent's watch, timer and 0 ms timer fire");
    is($r->{parent_pids}, 'self,self,self', "$name: ... in the parent");
    is($r->{parent_data}, 'x', "$name: ... which reads its data");
    is($r->{parent_idle}, 1, "$name: ... and removes and frees them");

    # libvirt in the grandchild updates what it inherited, and the
    # grandchild adds a watch and a timer of its own.
    $r = fork_case("$name: fork, the child updates and adds", $env, sub {
        my ($loop, $id, $calls) = @_;
        my $cpu = cpu();
        eval {
            Sys::Virt::Event::update_handle($id->{watch}, 0);
            Sys::Virt::Event::update_handle($id->{watch}, HANDLE_READABLE);
            Sys::Virt::Event::update_timeout($id->{timer}, 10);
            Sys::Virt::Event::update_timeout($id->{zero}, 0);
            1;
        } or report(update_error => $@);
        pipe(my $own_r, my $own_w) or die "pipe: $!";
        syswrite $own_w, 'o';
        my %own;
        my $own_watch = Sys::Virt::Event::add_handle(fileno $own_r, HANDLE_READABLE, sub {
            $own{watch}++;
            sysread $own_r, my $buf, 10;
        });
        my $own_timer = Sys::Virt::Event::add_timeout(20, sub { $own{timer}++ });
        # once: a 0 ms timer keeps the loop from sleeping while it is set
        my $own_zero;
        $own_zero = Sys::Virt::Event::add_timeout(0, sub {
            $own{zero}++;
            Sys::Virt::Event::update_timeout($own_zero, -1);
        });
        run_for(0.3);
        my @ids = sort { $a <=> $b } @$id{qw(timer zero)}, $own_timer, $own_zero;
        report(cpu => sprintf('%.3f', cpu() - $cpu),
               own => join(',', map { "$_:" . ($own{$_} ? 1 : 0) } qw(watch timer zero)),
               listed => join(',', $loop->watches) . ';' . join(',', $loop->timers),
               expected => join(',', sort { $a <=> $b } $id->{watch}, $own_watch) . ';'
                   . join(',', @ids));
        # libvirt in the child removes what it inherited: freed here
        Sys::Virt::Event::remove_handle($_) for $id->{watch}, $own_watch;
        Sys::Virt::Event::remove_timeout($_) for @$id{qw(timer zero)}, $own_timer, $own_zero;
        report(idle => ($loop->drain(2) && $loop->is_idle) ? 1 : 0);
    });
    is($r->{grandchild_exit}, 0, "$name: the child ended normally")
        or diag($r->{''});
    ok(!defined $r->{grandchild_update_error}, "$name: libvirt's updates of inherited ones are taken")
        or diag($r->{grandchild_update_error});
    is($r->{grandchild_parent_calls}, '',
       "$name: updated by libvirt in the child, the parent's watch and timers stay silent there");
    is($r->{grandchild_helper_inherited}, '', "$name: ... Sys::Virt::Event is not asked to call them");
    is($r->{grandchild_entered_inherited}, '', "$name: ... nor are they dispatched");
    is($r->{grandchild_own}, 'watch:1,timer:1,zero:1',
       "$name: the child's own watch, timer and 0 ms timer work");
    cmp_ok($r->{grandchild_cpu} // 9, '<', 0.2,
           "$name: the child does not spin ($r->{grandchild_cpu} s of CPU in 0.3 s)");
    is($r->{grandchild_listed}, $r->{grandchild_expected},
       "$name: the child lists the inherited ones beside its own (libvirt still holds them)");
    is($r->{grandchild_idle}, 1, "$name: the child removes and frees all of them");
    is($r->{grandchild_readable}, 1, "$name: the child left the parent's data unread");
    is($r->{grandchild_warnings}, '', "$name: no warnings in the child");
    is($r->{parent_after}, 1, "$name: then the parent's watch, timer and 0 ms timer fire");
    is($r->{parent_data}, 'x', "$name: ... and it reads its data");
    is($r->{parent_idle}, 1, "$name: ... and removes and frees them");
});

for_each_backend(sub {
    my ($name, $env) = @_;

    # The grandchild changes or removes the parent's watch before its loop
    # has run: on EV that must not touch the parent's kernel state.
    for my $what (qw(mask0 remove)) {
        my $r = fork_case("$name: fork, the child's libvirt drops the watch first ($what)", $env, sub {
            my ($loop, $id, $calls) = @_;
            if ($what eq 'mask0') {
                Sys::Virt::Event::update_handle($id->{watch}, 0);
            } else {
                Sys::Virt::Event::remove_handle($id->{watch});
            }
            run_for(0.3);
        });
        is($r->{grandchild_exit}, 0, "$name ($what): the child ended normally")
            or diag($r->{''});
        is($r->{grandchild_parent_calls}, '', "$name ($what): the child calls nothing of the parent's");
        is($r->{grandchild_warnings}, '', "$name ($what): no warnings in the child");
        is($r->{parent_after}, 1,
           "$name ($what): the parent's watch, timer and 0 ms timer still fire afterwards");
        is($r->{parent_data}, 'x', "$name ($what): ... and it reads its data");
    }
});

# libvirt's test driver: a connection with a lifecycle callback, events
# queued in the child on the inherited connection.
SKIP: {
    skip 'Sys::Virt is not installed', 1 unless have_sys_virt();
    for_each_backend(sub {
        my ($name, $env) = @_;
        my $r = child_case("$name: fork with a test:///default connection", sub {
            my $loop = start_loop($env);
            require Sys::Virt;
            my $conn = Sys::Virt->new(uri => 'test:///default');
            my $dom = $conn->get_domain_by_name('test');
            my @events;
            my $id = $conn->domain_event_register_any(undef,
                Sys::Virt::Domain::EVENT_ID_LIFECYCLE(), sub {
                    my (undef, undef, $event) = @_;
                    push @events, "$$:$event";
                    return 0;
                });
            my $g = in_child(sub {
                my @warnings;
                local $SIG{__WARN__} = sub { push @warnings, @_ };
                my $cpu = cpu();
                $dom->destroy;
                $dom->create;
                run_for(0.3);
                report(events => join(',', @events),
                       cpu => sprintf('%.3f', cpu() - $cpu),
                       warnings => join('', @warnings));
            }, timeout => 20);
            print map { "grandchild_$_\n" } split /\n/, $g->{output};
            report(grandchild_exit => $g->{exit} // "signal $g->{signal}");
            @events = ();
            $dom->destroy;
            report(parent_event => run_until(sub { @events }, 5) ? $events[0] : '');
            $dom->create;
            run_until(sub { @events >= 2 }, 5);
            $conn->domain_event_deregister_any($id);
            undef $dom;
            undef $conn;
            report(parent_idle => ($loop->drain(5) && $loop->is_idle) ? 1 : 0);
        });
        is($r->{grandchild_exit}, 0, "$name: test:///default: the child ended normally")
            or diag($r->{''});
        is($r->{grandchild_events}, '',
           "$name: test:///default: the parent's callback never runs in the child");
        cmp_ok($r->{grandchild_cpu} // 9, '<', 0.2,
               "$name: test:///default: the child does not spin ($r->{grandchild_cpu} s)");
        is($r->{grandchild_warnings}, '', "$name: test:///default: no warnings in the child");
        like($r->{parent_event}, qr/\A\d+:${\ Sys::Virt::Domain::EVENT_STOPPED()}\z/,
             "$name: test:///default: the parent's events still arrive, in the parent");
        is($r->{parent_idle}, 1, "$name: test:///default: the parent closes and drains");
    });
}

# -- 3. a watched descriptor closed behind the loop's back ------------------------

for_each_backend(sub {
    my ($name, $env) = @_;
    my $r = child_case("$name: a watched descriptor is closed", sub {
        my $loop = start_loop($env);
        count_dispatches();
        pipe(my $pr, my $pw) or die "pipe: $!";
        my @calls;
        my $watch = Sys::Virt::Event::add_handle(fileno $pr, HANDLE_READABLE,
                                                 sub { push @calls, $_[2] });
        # other I/O of the program, fed every 20 ms
        pipe(my $or, my $ow) or die "pipe: $!";
        my $other = 0;
        my $reader = AnyEvent->io(fh => $or, poll => 'r', cb => sub {
            $other++;
            sysread $or, my $buf, 10;
        });
        my $feeder = AnyEvent->timer(after => 0.02, interval => 0.02,
                                     cb => sub { syswrite $ow, 'o' });
        run_until(sub { $other >= 2 }, 5);

        POSIX::close(fileno $pr);
        my $cpu = cpu();
        my $called = run_until(sub { @calls }, 2.5);
        my $cpu_until = cpu() - $cpu;
        report(called => $called, events => join(',', @calls),
               cpu_until_called => sprintf('%.3f', $cpu_until));
        # afterwards
        $other = 0;
        $cpu = cpu();
        run_for(0.3);
        report(after_calls => scalar(@calls), other_after => $other,
               cpu_after => sprintf('%.3f', cpu() - $cpu),
               entered => $entered{"_dispatch_watch $watch"} // 0);
        Sys::Virt::Event::remove_handle($watch);
        report(idle => ($loop->drain(2) && $loop->is_idle) ? 1 : 0);
    });
    my $model = $r->{model} // '';
    my $ev = $r->{ev_backend} // '';
    if ($model eq 'AnyEvent::Impl::EV' && $ev eq 'epoll') {
        # epoll forgets a descriptor once it is closed: nothing ever wakes
        is($r->{called}, 0, "$name (epoll): the watch is never called");
        cmp_ok($r->{cpu_until_called}, '<', 0.5, "$name (epoll): ... and the loop sleeps");
    } elsif ($model) {
        is($r->{called}, 1, "$name: the watch is called");
        is($r->{events}, HANDLE_ERROR, "$name: ... once, with HANDLE_ERROR");
        is($r->{after_calls}, 1, "$name: ... and not again");
        cmp_ok($r->{cpu_after}, '<', 0.1, "$name: ... nor does the loop spin afterwards");
        cmp_ok($r->{entered}, '<=', 1, "$name: ... nor wake for it");
    }
    if ($model eq 'AnyEvent::Impl::Perl') {
        # select() fails for every descriptor until the watch lets go of it
        cmp_ok($r->{cpu_until_called}, '<', 1.5,
               "$name: it took at most the sweep interval ($r->{cpu_until_called} s of CPU)");
    }
    cmp_ok($r->{other_after}, '>=', 5, "$name: the program's other I/O works afterwards");
    is($r->{idle}, 1, "$name: the watch is removed and freed");
});

done_testing;
