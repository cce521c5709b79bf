// The order form: show only the fields of the chosen kind (without JavaScript all are shown).
(function () {
  "use strict";
  var form = document.querySelector(".order-form");
  if (!form) return;
  function sync() {
    var checked = form.querySelector('input[name="kind"]:checked');
    var kind = checked ? checked.value : "";
    form.querySelectorAll("[data-kind]").forEach(function (el) {
      el.hidden = kind !== "" && el.getAttribute("data-kind") !== kind;
    });
  }
  form.addEventListener("change", function (e) {
    if (e.target.name === "kind") sync();
  });
  sync();

  // The live total, counted in pence (whole numbers) so no float rounding creeps in.
  var totalOut = document.getElementById("order-total");
  function pence(price) {
    var parts = String(price).split(".");
    return parseInt(parts[0], 10) * 100 + parseInt((parts[1] || "0").concat("0").slice(0, 2), 10);
  }
  function showTotal() {
    var sum = 0;
    form.querySelectorAll("tr[data-price]").forEach(function (row) {
      var input = row.querySelector('input[type="number"]');
      var qty = input ? parseInt(input.value, 10) : 0;
      if (qty > 0 && qty <= 50) sum += qty * pence(row.getAttribute("data-price"));
    });
    var pounds = Math.floor(sum / 100);
    var rest = String(sum % 100);
    totalOut.textContent = "£" + pounds + "." + (rest.length < 2 ? "0" + rest : rest);
  }
  if (totalOut) {
    totalOut.parentNode.hidden = false;
    form.addEventListener("input", showTotal);
    showTotal();
  }
  // Django marks every field with an error aria-invalid: start at the first one.
  var firstInvalid = form.querySelector('[aria-invalid="true"]:not([type="hidden"])');
  if (firstInvalid) firstInvalid.focus();
})();
