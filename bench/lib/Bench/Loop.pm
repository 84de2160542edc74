package Bench::Loop;

# A minimal event loop for the benchmarks, kept as simply as a real one
# keeps its watches: plain hashes keyed by id, nothing polled (the
# benchmarks call the helpers directly), and the free requested inside
# remove_*, as upstream Sys::Virt's loops do.  It subclasses whichever
# Sys::Virt::Event is loaded: this distribution's or the system's.

use strict;
use warnings;

our @ISA = ('Sys::Virt::Event');

sub new {
    my ($class) = @_;
    return bless { handles => {}, timeouts => {}, next => 0 }, $class;
}

sub add_handle {
    my ($self, $fd, $events, $cb, $opaque, $ff) = @_;
    my $watch = ++$self->{next};
    $self->{handles}{$watch} = [$fd, $events, $cb, $opaque, $ff];
    return $watch;
}

sub update_handle {
    my ($self, $watch, $events) = @_;
    my $h = $self->{handles}{$watch} or return;
    $h->[1] = $events;
    return;
}

sub remove_handle {
    my ($self, $watch) = @_;
    my $h = delete $self->{handles}{$watch} or return -1;
    $self->_free_callback_opaque($h->[4], $h->[3]);
    return 0;
}

sub add_timeout {
    my ($self, $ms, $cb, $opaque, $ff) = @_;
    my $timer = ++$self->{next};
    $self->{timeouts}{$timer} = [$ms, $cb, $opaque, $ff];
    return $timer;
}

sub update_timeout {
    my ($self, $timer, $ms) = @_;
    my $t = $self->{timeouts}{$timer} or return;
    $t->[0] = $ms;
    return;
}

sub remove_timeout {
    my ($self, $timer) = @_;
    my $t = delete $self->{timeouts}{$timer} or return -1;
    $self->_free_callback_opaque($t->[3], $t->[2]);
    return 0;
}

1;
