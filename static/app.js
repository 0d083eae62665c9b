// Dispatched dashboard behaviour, kept out of the HTML so the Content-Security-Policy needs no
// inline script (see dispatched/security_headers.py). Loaded with `defer` after htmx.

// Copy buttons: <button data-copy="element-id"> copies that element's text.
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (source && navigator.clipboard) navigator.clipboard.writeText(source.textContent.trim());
  button.textContent = "Copied";
});

// htmx swaps no 4xx by default; a 429 answer of a form marked data-swap-429 (e.g. "too many
// test events") says why, so show it where the answer would have gone.
document.addEventListener("htmx:beforeSwap", (event) => {
  const detail = event.detail;
  const form = detail.requestConfig && detail.requestConfig.elt;
  if (detail.xhr.status === 429 && form && form.closest("[data-swap-429]")) {
    detail.shouldSwap = true;
    detail.isError = false;
  }
});
