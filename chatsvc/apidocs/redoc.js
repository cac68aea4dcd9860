// Starts ReDoc on /redoc. A file of its own, so that the page's
// Content-Security-Policy allows no inline script (chatsvc/api/docs.py).
"use strict";
(function () {
  const root = document.getElementById("redoc");
  Redoc.init(root.dataset.specUrl, { hideDownloadButton: false }, root);
})();
