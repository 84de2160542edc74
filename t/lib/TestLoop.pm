package TestLoop;

# A small, correct poll()-based event loop written the way an upstream
# Sys::Virt 9.0.0 user writes one: a subclass of Sys::Virt::Event that
# calls the helpers as methods and, by default, frees inside remove_*.
# It records every call libvirt makes, for the tests to inspect.

use strict;
use warnings;

use parent 'Sys::Virt::Event';

use IO::Poll qw(POLLIN POLLOUT POLLERR POLLHUP POLLNVAL);
use Time::HiRes ();

sub new {
    my ($class, %opts) = @_;
    return bless {
        handles        => {},
        timeouts       => {},
        next_watch     => 1,
        next_timer     => 1,
        calls          => [],
        free_in_remove => exists $opts{free_in_remove} ? $opts{free_in_remove} : 1,
        later          => [],
    }, $class;
}

sub _now_ms { return Time::HiRes::time() * 1000 }

sub add_handle {
    my ($self, $fd, $events, $cb, $opaque, $ff) = @_;
    my $watch = $self->{next_watch}++;
    push @{$self->{calls}}, [add_handle => $fd, $events];
    $self->{handles}{$watch} = {
        watch => $watch, fd => $fd, events => $events,
        cb => $cb, opaque => $opaque, ff => $ff,
    };
    return $watch;
}

sub update_handle {
    my ($self, $watch, $events) = @_;
    push @{$self->{calls}}, [update_handle => $watch, $events];
    my $h = $self->{handles}{$watch} or return;
    $h->{events} = $events;
    return;
}

sub remove_handle {
    my ($self, $watch) = @_;
    push @{$self->{calls}}, [remove_handle => $watch];
    my $h = delete $self->{handles}{$watch} or return -1;
    $self->_release($h);
    return 0;
}

sub add_timeout {
    my ($self, $ms, $cb, $opaque, $ff) = @_;
    my $timer = $self->{next_timer}++;
    push @{$self->{calls}}, [add_timeout => $ms];
    $self->{timeouts}{$timer} = {
        timer => $timer, interval => $ms, due => _now_ms() + $ms,
        cb => $cb, opaque => $opaque, ff => $ff,
    };
    return $timer;
}

sub update_timeout {
    my ($self, $timer, $ms) = @_;
    push @{$self->{calls}}, [update_timeout => $timer, $ms];
    my $t = $self->{timeouts}{$timer} or return;
    $t->{interval} = $ms;
    $t->{due} = _now_ms() + $ms;
    return;
}

sub remove_timeout {
    my ($self, $timer) = @_;
    push @{$self->{calls}}, [remove_timeout => $timer];
    my $t = delete $self->{timeouts}{$timer} or return -1;
    $self->_release($t);
    return 0;
}

# Upstream's own loop frees inside remove_*; the module must defer it.
# With free_in_remove => 0 the free happens after the next iteration.
sub _release {
    my ($self, $entry) = @_;
    if ($self->{free_in_remove}) {
        $self->_free_callback_opaque($entry->{ff}, $entry->{opaque});
    } else {
        push @{$self->{later}}, $entry;
    }
    return;
}

sub idle {
    my ($self) = @_;
    return !%{$self->{handles}} && !%{$self->{timeouts}};
}

# One iteration: wait at most $max_ms (default 100) for a ready watch or
# a due timer, then dispatch.  Watches whose mask is 0 are not polled;
# poll reports ERROR and HANGUP for the others whatever their mask.
sub run_once {
    my ($self, $max_ms) = @_;
    $max_ms = 100 unless defined $max_ms;

    my $wait = $max_ms;
    my $now = _now_ms();
    for my $t (values %{$self->{timeouts}}) {
        next if $t->{interval} < 0;
        my $left = $t->{due} - $now;
        $left = 0 if $left < 0;
        $wait = $left if $left < $wait;
    }

    my @poll;
    my @watches = sort { $a <=> $b } keys %{$self->{handles}};
    my %by_fd_mask;
    for my $watch (@watches) {
        my $h = $self->{handles}{$watch};
        next unless $h->{events};
        my $mask = 0;
        $mask |= POLLIN if $h->{events} & Sys::Virt::Event::HANDLE_READABLE;
        $mask |= POLLOUT if $h->{events} & Sys::Virt::Event::HANDLE_WRITABLE;
        push @poll, $h->{fd}, $mask;
    }
    my @ready;
    if (@poll) {
        # _poll writes each descriptor's revents over its mask in place
        IO::Poll::_poll(int($wait), @poll);
        for (my $i = 0; $i < @poll; $i += 2) {
            push @ready, [$poll[$i], $poll[$i + 1]] if $poll[$i + 1];
        }
    } elsif ($wait > 0) {
        Time::HiRes::sleep($wait / 1000);
    }

    # Dispatch from a snapshot: a callback may remove a later watch, and
    # the module must then skip it.
    my @snapshot = map { $self->{handles}{$_} } @watches;
    for my $r (@ready) {
        my ($fd, $revents) = @$r;
        for my $h (@snapshot) {
            next unless $h->{fd} == $fd && $h->{events};
            my $events = 0;
            $events |= Sys::Virt::Event::HANDLE_READABLE if $revents & POLLIN;
            $events |= Sys::Virt::Event::HANDLE_WRITABLE if $revents & POLLOUT;
            $events |= Sys::Virt::Event::HANDLE_ERROR if $revents & (POLLERR | POLLNVAL);
            $events |= Sys::Virt::Event::HANDLE_HANGUP if $revents & POLLHUP;
            $events &= $h->{events} | Sys::Virt::Event::HANDLE_ERROR | Sys::Virt::Event::HANDLE_HANGUP;
            next unless $events;
            $self->_run_handle_callback($h->{watch}, $h->{fd}, $events, $h->{cb}, $h->{opaque});
        }
    }

    $now = _now_ms();
    my @timers = map { $self->{timeouts}{$_} } sort { $a <=> $b } keys %{$self->{timeouts}};
    for my $t (@timers) {
        next if $t->{interval} < 0 || $t->{due} > $now;
        $t->{due} = $now + $t->{interval};
        $self->_run_timeout_callback($t->{timer}, $t->{cb}, $t->{opaque});
    }

    while (my $entry = shift @{$self->{later}}) {
        $self->_free_callback_opaque($entry->{ff}, $entry->{opaque});
    }
    return;
}

# Run until $cond returns true or $seconds pass; returns $cond's last value.
sub run_until {
    my ($self, $cond, $seconds) = @_;
    my $deadline = Time::HiRes::time() + ($seconds || 5);
    until ($cond->()) {
        return $cond->() if Time::HiRes::time() > $deadline;
        $self->run_once(20);
    }
    return 1;
}

1;
