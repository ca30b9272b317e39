// MathJax configuration for pymdownx.arithmatex (generic mode).
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    // Formulas marked by arithmatex, and a heading's formula in the navigation.
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex|md-ellipsis",
  },
};

// MathJax 3 does not break lines, so a display formula wider than its column
// is set smaller to fit, down to MIN_SCALE of its size (about the size of the
// text); one wider still scrolls inside its own box (the theme's
// div.arithmatex), as on a phone.
const MIN_SCALE = 0.75;

function fitFormulas() {
  for (const formula of document.querySelectorAll('div.arithmatex > mjx-container[display="true"]')) {
    const math = formula.querySelector(":scope > mjx-math");
    if (!math) continue;
    // MathJax's own size (a percentage matching the text's x-height).
    formula.dataset.size ??= formula.style.fontSize || "100%";
    formula.style.fontSize = formula.dataset.size;
    const box = formula.parentElement;
    const px = (element, side) => parseFloat(getComputedStyle(element)[`padding${side}`]);
    const room = box.clientWidth - px(box, "Left") - px(box, "Right")
      - px(formula, "Left") - px(formula, "Right");
    const width = math.getBoundingClientRect().width;
    if (width > room) {
      const scale = Math.max(MIN_SCALE, Math.floor((100 * room) / width) / 100);
      formula.style.fontSize = `calc(${formula.dataset.size} * ${scale})`;
    }
  }
}

let pendingFit = 0;
window.addEventListener("resize", () => {
  cancelAnimationFrame(pendingFit);
  pendingFit = requestAnimationFrame(fitFormulas);
});

document$.subscribe(() => {
  MathJax.startup.output.clearCache();
  MathJax.typesetClear();
  MathJax.texReset();
  MathJax.typesetPromise()
    .then(() => document.fonts.ready)
    .then(fitFormulas);
});
