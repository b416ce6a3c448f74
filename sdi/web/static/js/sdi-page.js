/* HK SDI: every page. The language switch keeps the page's other query parameters, and a language chosen with
 * ?lang= follows the reader to the other pages of this server (links to the same origin without their own
 * lang get it), so that a Chinese reader does not fall back to English on the next click.
 */
(function (window, document) {
  'use strict';
  var here = new URL(window.location.href);
  var chosen = here.searchParams.get('lang');

  document.querySelectorAll('a[data-sdi-lang]').forEach(function (link) {
    var target = new URL(here.href);
    target.searchParams.set('lang', link.getAttribute('data-sdi-lang'));
    link.setAttribute('href', target.pathname + target.search + target.hash);
  });
  if (!chosen) { return; }
  document.querySelectorAll('a[href]').forEach(function (link) {
    if (link.hasAttribute('data-sdi-lang')) { return; }
    var url;
    try { url = new URL(link.getAttribute('href'), here.href); } catch (e) { return; }
    if (url.origin !== here.origin || url.searchParams.has('lang')) { return; }
    var format = url.searchParams.get('f');
    if (format && format !== 'html') { return; }  // JSON and downloads keep their own language negotiation
    url.searchParams.set('lang', chosen);
    link.setAttribute('href', url.href);
  });
}(window, document));
