// The example app's one script: small, and served by the front server
// itself (compressed when the browser accepts it, like the HTML pages).
//
// It marks the link of the page being shown, and says in the footer which
// protocol the page came over (the Navigation Timing API's nextHopProtocol:
// "h2" for HTTP/2 over TLS, "http/1.1" otherwise), so that a look at the
// page tells whether the front server negotiated HTTP/2.
(function () {
  'use strict';

  function markCurrentLink() {
    var here = window.location.pathname;
    var links = document.querySelectorAll('main a[href]');
    for (var i = 0; i < links.length; i++) {
      if (links[i].getAttribute('href') === here) {
        links[i].setAttribute('aria-current', 'page');
      }
    }
  }

  function showProtocol() {
    var footer = document.getElementById('protocol');
    if (!footer || !window.performance || !performance.getEntriesByType) {
      return;
    }
    var entries = performance.getEntriesByType('navigation');
    var protocol = entries.length ? entries[0].nextHopProtocol : '';
    if (protocol) {
      footer.textContent = 'This page came over ' + protocol + '.';
    }
  }

  document.addEventListener('DOMContentLoaded', function () {
    markCurrentLink();
    showProtocol();
  });
})();
