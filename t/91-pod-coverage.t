use strict;
use warnings;

use Test::More;

eval { require Test::Pod::Coverage; Test::Pod::Coverage->VERSION(1.08); 1 }
    or plan skip_all => 'Test::Pod::Coverage 1.08 is needed to check POD coverage';

# Every public name has POD.  The implementation methods of
# Sys::Virt::EventImpl are documented under one heading.
Test::Pod::Coverage::pod_coverage_ok('Sys::Virt::Event');
Test::Pod::Coverage::pod_coverage_ok('Sys::Virt::EventImpl', {
    trustme => [qr/^(?:add|update|remove)_(?:handle|timeout)$/],
});
SKIP: {
    skip 'AnyEvent is not installed', 1 unless eval { require AnyEvent; 1 };
    Test::Pod::Coverage::pod_coverage_ok('Sys::Virt::Event::AnyEvent');
}
SKIP: {
    skip 'Sys::Virt::Event::EV is not built (EV was missing at configure time)', 1
        unless eval { require Sys::Virt::Event::EV; 1 };
    Test::Pod::Coverage::pod_coverage_ok('Sys::Virt::Event::EV');
}
done_testing;
