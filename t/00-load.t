use strict;
use warnings;

use Test::More;

use_ok('Sys::Virt::Event');
use_ok('Sys::Virt::EventImpl');

like($Sys::Virt::Event::VERSION, qr/^\d+\.\d+$/, 'version is a plain decimal');
is($Sys::Virt::EventImpl::VERSION, $Sys::Virt::Event::VERSION,
   'both modules carry the same version');
ok(Sys::Virt::EventImpl->isa('Sys::Virt::Event'),
   'EventImpl subclasses inherit the helpers');

for my $name (qw(register register_default run_default
                 _run_handle_callback _run_timeout_callback _free_callback_opaque
                 add_handle update_handle remove_handle
                 add_timeout update_timeout remove_timeout)) {
    ok(defined &{"Sys::Virt::Event::$name"}, "Sys::Virt::Event::$name is defined");
}

diag("libvirt and Sys::Virt::Event $Sys::Virt::Event::VERSION, perl $]");
done_testing;
