package Sys::Virt::EventImpl;

use 5.018;
use strict;
use warnings;

use Carp ();
use Sys::Virt::Event ();

our $VERSION = '0.02';

# Subclasses get register() and the _run_*/_free_* helpers from here.
our @ISA = ('Sys::Virt::Event');

for my $method (qw(add_handle update_handle remove_handle
                   add_timeout update_timeout remove_timeout)) {
    no strict 'refs';
    *{$method} = sub {
        my $self = shift;
        my $class = ref($self) || $self;
        Carp::croak("$class must provide the $method method "
                    . "(Sys::Virt::EventImpl is abstract)");
    };
}

1;

__END__

=head1 NAME

Sys::Virt::EventImpl - Base class for event loop implementations

=head1 SYNOPSIS

  package My::Loop;
  use parent 'Sys::Virt::EventImpl';

  sub add_handle     { my ($self, $fd, $events, $cb, $opaque, $ff) = @_; ... }
  sub update_handle  { my ($self, $watch, $events) = @_; ... }
  sub remove_handle  { my ($self, $watch) = @_; ... }
  sub add_timeout    { my ($self, $frequency, $cb, $opaque, $ff) = @_; ... }
  sub update_timeout { my ($self, $timer, $frequency) = @_; ... }
  sub remove_timeout { my ($self, $timer) = @_; ... }

  package main;
  My::Loop->new->register;

=head1 DESCRIPTION

The base-class name newer releases of L<Sys::Virt> use for event loop
implementations.  It is a subclass of L<Sys::Virt::Event>, so its
subclasses inherit C<register> and the C<_run_handle_callback>,
C<_run_timeout_callback> and C<_free_callback_opaque> helpers, and they
are accepted by C<Sys::Virt::Event::register>.  L<Sys::Virt::Event>
describes what each method must do.

=head1 METHODS

=head2 add_handle, update_handle, remove_handle, add_timeout, update_timeout, remove_timeout

Abstract: each croaks with "CLASS must provide the METHOD method".
C<register> refuses a subclass that does not override all six.

=head1 SEE ALSO

L<Sys::Virt::Event>

=head1 COPYRIGHT AND LICENSE

This library is free software; you can redistribute it and/or modify it
under the same terms as Perl itself.

=cut
